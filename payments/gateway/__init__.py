"""Payment providers: the contract (base) and its Stripe implementation; get_gateway() picks one."""

from __future__ import annotations

from functools import cache
from typing import Any

from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from payments.conf import payments_settings
from payments.gateway.base import PaymentGateway


@cache
def get_gateway() -> PaymentGateway:
    """The configured provider, built once per settings generation."""
    return import_string(payments_settings.GATEWAY)()


def _clear_gateway(*, setting: str, **kwargs: Any) -> None:
    if setting == "PAYMENTS":
        get_gateway.cache_clear()


setting_changed.connect(_clear_gateway, dispatch_uid="payments.gateway.clear")
