"""The PAYMENTS settings dict, read against defaults (in the manner of DRF's REST_FRAMEWORK)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

DEFAULTS: dict[str, Any] = {
    # Stripe credentials; the project passes them in from its own environment.
    "SECRET_KEY": "",
    "PUBLISHABLE_KEY": "",
    "WEBHOOK_SECRETS": [],
    "API_BASE": "",
    "API_VERSION": "2026-10-28.endive",
    "GATEWAY": "payments.gateway.stripe.StripeGateway",
    # One retry layer for provider calls: attempts after the first, and the first delay.
    "RETRY_ATTEMPTS": 3,
    "RETRY_DELAY": 1.0,
    "RETRY_MAX_DELAY": 8.0,
    "TIMEOUT": 20.0,
    # Seconds the provider calls of one web request may take in all, retries included, with
    # payments.middleware.ProviderBudgetMiddleware (keep it below the WSGI server's timeout).
    "REQUEST_BUDGET": 25.0,
    # Money.
    "CURRENCY": "usd",
    "FEE_RATE": Decimal("0.03"),
    # The fixed part of the fee per currency, in that currency's minor units: {"usd": 30, "jpy": 40}.
    "FEE_FIXED": {},
    # Limits in major units; AMOUNT_LIMITS overrides per currency, in minor units. Stripe's own
    # per-currency minimum and its eight-digit maximum always apply (payments.money).
    # A floor of the project's own above Stripe's minimum, in major units (None: Stripe's).
    "MIN_AMOUNT": None,
    "MAX_AMOUNT": Decimal("100000.00"),
    "AMOUNT_LIMITS": {},
    # Refund policy for self-service refunds (staff may refund any time).
    "REFUND_FEE": True,
    "REFUND_CUTOFF": timedelta(hours=24),
    # Webhooks.
    "WEBHOOK_TOLERANCE": 300,
    "WEBHOOK_MAX_ATTEMPTS": 5,
    # Seconds storing an event may wait for a database lock before the endpoint answers 503.
    "WEBHOOK_LOCK_TIMEOUT": 5,
    # At most one nudge of the drain task per this many seconds per web process (queue.nudge).
    "WEBHOOK_NUDGE_INTERVAL": 0.1,
    # Stripe takes 30 minutes to 24 hours; 35 minutes leaves room for clock skew and latency.
    "CHECKOUT_EXPIRES_AFTER": timedelta(minutes=35),
    # Background work: open attempts older than this are canceled; refunds retried this often.
    "OPEN_PAYMENT_TTL": timedelta(hours=2),
    "REFUND_RETRY_ATTEMPTS": 8,
    # Sweeps (beat, every minute) re-enqueue what a lost task left behind: webhook events still
    # pending this long after they arrived, refunds Stripe has not heard of this long after their
    # last change. The refund delay exceeds a retry's longest wait plus a task's time limit, so a
    # refund waiting for its own scheduled retry is never swept into a second chain.
    "WEBHOOK_SWEEP_AFTER": timedelta(minutes=2),
    "REFUND_SWEEP_AFTER": timedelta(minutes=7),
    # Longest delay before a retried task runs again; keep it below the broker's visibility timeout.
    "MAX_RETRY_COUNTDOWN": 240,
    # Without a reachable broker (development only): run tasks in this process after commit.
    "RUN_TASKS_INLINE_WITHOUT_BROKER": False,
    # The site's own address: Checkout return URLs on its host are accepted (besides ALLOWED_HOSTS).
    "SITE_URL": "",
    # How long a processed webhook event keeps its raw payload (names, emails, addresses), and a
    # finished payment its card details and error text; None keeps them. prune_payment_data.
    "WEBHOOK_PAYLOAD_RETENTION": timedelta(days=90),
    "PERSONAL_DATA_RETENTION": timedelta(days=730),
    # Per-user rates of the endpoints that start payments or refunds, and of status polls.
    "THROTTLE_RATES": {"payments": "30/min", "payment_status": "120/min"},
}


class PaymentsSettings:
    """Attribute access to PAYMENTS with defaults; the cache clears when settings change."""

    def __init__(self) -> None:
        self._cached: dict[str, Any] = {}

    @property
    def user_settings(self) -> dict[str, Any]:
        return getattr(settings, "PAYMENTS", {}) or {}

    def unknown_keys(self) -> list[str]:
        return sorted(set(self.user_settings) - set(DEFAULTS))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in DEFAULTS:
            raise AttributeError(f"Invalid PAYMENTS setting: {name!r}")
        if name not in self._cached:
            value = self.user_settings.get(name, DEFAULTS[name])
            if name == "FEE_RATE":
                value = Decimal(str(value))
            if name in {"MIN_AMOUNT", "MAX_AMOUNT"} and value is not None:
                value = Decimal(str(value))
            if name == "FEE_FIXED" and isinstance(value, dict):
                value = {str(k).lower(): v for k, v in value.items()}
            if name == "THROTTLE_RATES":
                value = {**DEFAULTS["THROTTLE_RATES"], **(value or {})}
            if name == "WEBHOOK_SECRETS" and isinstance(value, str):
                value = [s.strip() for s in value.split(",") if s.strip()]
            self._cached[name] = value
        return self._cached[name]

    def reload(self) -> None:
        self._cached.clear()


payments_settings = PaymentsSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "PAYMENTS":
        payments_settings.reload()


def connect_signals() -> None:
    setting_changed.connect(_reload, dispatch_uid="payments.conf.reload")
