"""System checks that catch a misconfigured payments app at start-up, not at the first payment."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from importlib.util import find_spec
from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.core.exceptions import ValidationError

from payments import money
from payments.conf import payments_settings


@register("payments", deploy=True)
def check_stripe_keys(app_configs: Any = None, **kwargs: Any) -> list:
    """A deployment check (`check --deploy`): `migrate`, `makemigrations` and `check` work on a
    fresh clone without keys; a production start is refused without them by the host's own
    start-up check (the booking site's config.production)."""
    messages: list = []
    if not settings.DEBUG and not payments_settings.SECRET_KEY:
        messages.append(
            Error(
                "No Stripe secret key is configured.",
                hint="Set STRIPE_SECRET_KEY (or STRIPE_SECRET_KEY_FILE).",
                id="payments.E002",
            )
        )
    if not settings.DEBUG and not payments_settings.WEBHOOK_SECRETS:
        messages.append(
            Error(
                "No Stripe webhook signing secret is configured.",
                hint="Set STRIPE_WEBHOOK_SECRET to the endpoint's whsec_... secret.",
                id="payments.E003",
            )
        )
    return messages


@register("payments")
def check_payments_settings(app_configs: Any = None, **kwargs: Any) -> list:
    messages: list = []
    unknown = payments_settings.unknown_keys()
    if unknown:
        messages.append(
            Error(
                f"Unknown PAYMENTS settings: {', '.join(unknown)}.",
                hint="Check the spelling against payments.conf.DEFAULTS.",
                id="payments.E001",
            )
        )
    secret = payments_settings.SECRET_KEY or ""
    if settings.DEBUG and secret.startswith(("sk_live_", "rk_live_")):
        messages.append(
            Warning(
                "A live Stripe key is configured while DEBUG is on.",
                hint="Use a test key (sk_test_...) for development.",
                id="payments.W001",
            )
        )
    rate = payments_settings.FEE_RATE
    if not Decimal(0) <= rate < Decimal(1):
        messages.append(Error("PAYMENTS['FEE_RATE'] must be at least 0 and below 1.", id="payments.E004"))
    low = payments_settings.MIN_AMOUNT
    if low is not None and low > payments_settings.MAX_AMOUNT:
        messages.append(Error("PAYMENTS['MIN_AMOUNT'] is above MAX_AMOUNT.", id="payments.E005"))
    try:
        money.amount_limits(payments_settings.CURRENCY)
    except ValidationError as error:
        messages.append(Error(error.messages[0], id="payments.E008"))
    messages.extend(_check_fixed_fee())
    expires_after = payments_settings.CHECKOUT_EXPIRES_AFTER
    if not CHECKOUT_EXPIRY_RANGE[0] <= expires_after <= CHECKOUT_EXPIRY_RANGE[1]:
        messages.append(
            Error(
                "PAYMENTS['CHECKOUT_EXPIRES_AFTER'] is outside what Stripe accepts.",
                hint="Stripe takes 30 minutes to 24 hours; use 31 minutes to 23 hours to leave a margin.",
                id="payments.E007",
            )
        )
    for name in ("WEBHOOK_PAYLOAD_RETENTION", "PERSONAL_DATA_RETENTION"):
        kept = getattr(payments_settings, name)
        if kept is not None and not (isinstance(kept, timedelta) and kept > timedelta(0)):
            messages.append(
                Error(
                    f"PAYMENTS['{name}'] must be a positive timedelta, or None to keep the data.",
                    id="payments.E009",
                )
            )
    return messages


# Stripe refuses a Checkout Session expiring in under 30 minutes or over 24 hours.
CHECKOUT_EXPIRY_RANGE = (timedelta(minutes=31), timedelta(hours=23))


def _check_fixed_fee() -> list:
    fixed = payments_settings.FEE_FIXED
    if not isinstance(fixed, dict):
        return [
            Error(
                "PAYMENTS['FEE_FIXED'] must be a dict of currency to minor units.",
                hint='One number means different money in every currency: write {"usd": 30, "jpy": 40}.',
                id="payments.E006",
            )
        ]
    errors = []
    for currency, amount in fixed.items():
        try:
            unit = money.chargeable_unit(currency)
        except ValidationError:
            unit = 0
        if not unit or isinstance(amount, bool) or not isinstance(amount, int) or amount < 0 or amount % unit:
            errors.append(
                Error(
                    f"PAYMENTS['FEE_FIXED'][{currency!r}] is not a chargeable amount in minor units.",
                    id="payments.E006",
                )
            )
    return errors


@register("payments")
def check_background_work(app_configs: Any = None, **kwargs: Any) -> list:
    """Without Celery (the package's `celery` extra) nothing in the background runs."""
    if find_spec("celery") is not None:
        return []
    return [
        Warning(
            "Celery is not installed: webhook events are stored but not processed, refunds Stripe "
            "did not answer are not retried, and money that arrives for a canceled or duplicate "
            "attempt is not refunded automatically.",
            hint='Install the celery extra: pip install "django-payable-stripe[celery]".',
            id="payments.W002",
        )
    ]
