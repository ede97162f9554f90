"""Payment providers: the contract (base) and its Stripe implementation; get_gateway() picks one."""

from __future__ import annotations

from functools import cache

from django.utils.module_loading import import_string

from payments.conf import payments_settings
from payments.gateway.base import PaymentGateway


@cache
def get_gateway() -> PaymentGateway:
    """The configured provider, built once per settings generation."""
    return import_string(payments_settings.GATEWAY)()
