"""The Stripe provider: the only module that imports `stripe`. Pins the API version, retries once over."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import stripe

from payments import metrics, timeline
from payments.conf import payments_settings
from payments.exceptions import (
    CardError,
    PaymentError,
    ProviderError,
    ProviderUnavailable,
    WebhookSignatureError,
)
from payments.gateway import stripe_objects
from payments.gateway.base import (
    CHECKOUT_INTENT_MARK,
    ChargeInfo,
    CheckoutInfo,
    DisputeInfo,
    EventInfo,
    IntentInfo,
    Page,
    PaymentGateway,
    PaymentMethodInfo,
    RefundInfo,
    SetupIntentInfo,
)
from payments.gateway.budget import budget_remaining

logger = logging.getLogger(__name__)

# The reasons Stripe accepts on a refund; anything else travels in metadata only.
STRIPE_REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})


class BackoffHTTPClient(stripe.RequestsClient):
    """The SDK's HTTP client with our backoff: exponential from RETRY_DELAY, capped, with jitter.

    The SDK's own retry loop is the one retry layer: it retries connection errors,
    timeouts, 409 and 5xx, honours `Stripe-Should-Retry`, and re-sends the same
    idempotency key. A 429 without that header is not retried here; it surfaces as
    `ProviderUnavailable` so the caller (a Celery task, a client) retries later.
    """

    # Below this much time left, no call is started: it could not finish.
    MIN_CALL_SECONDS = 1.0

    def __init__(self, *, timeout: float, initial_delay: float, max_delay: float) -> None:
        super().__init__(timeout=timeout)
        self._initial_delay = initial_delay
        self._max_delay = max_delay

    # The SDK reads self._timeout for each attempt: inside a request's budget it is what is left.
    @property
    def _timeout(self) -> float:
        remaining = budget_remaining()
        if remaining is None:
            return self._base_timeout
        return max(min(self._base_timeout, remaining), 0.1)

    @_timeout.setter
    def _timeout(self, value: float) -> None:
        self._base_timeout = value

    def request(self, method: str, url: str, headers: Any, post_data: Any = None) -> Any:  # type: ignore[override]  # as RequestsClient
        remaining = budget_remaining()
        if remaining is not None and remaining < self.MIN_CALL_SECONDS:
            # Out of the request's time: not even a first try (the caller answers 503).
            raise stripe.APIConnectionError("No time is left in this request to call Stripe.")
        return super().request(method, url, headers, post_data)

    def _should_retry(
        self, response: Any, api_connection_error: Any, num_retries: int, max_network_retries: int | None
    ) -> bool:
        if not super()._should_retry(response, api_connection_error, num_retries, max_network_retries):
            return False
        remaining = budget_remaining()
        longest_sleep = min(self._initial_delay * (2**num_retries), self._max_delay)
        retrying = remaining is None or remaining > longest_sleep + self.MIN_CALL_SECONDS
        if retrying:
            status = response[1] if response is not None else None
            cause = "network" if status is None else ("429" if status == 429 else f"{status // 100}xx")
            metrics.STRIPE_RETRIES.labels(cause=cause).inc()
        return retrying

    def _sleep_time_seconds(self, num_retries: int) -> float:
        delay = min(self._initial_delay * (2 ** (num_retries - 1)), self._max_delay)
        return delay * (0.5 + random.random() / 2)  # noqa: S311  (jitter, not security)


def _translate(exc: stripe.StripeError) -> PaymentError:
    """Turn an SDK error into the app's own, keeping only what is safe to show."""
    code = getattr(exc, "code", None) or ""
    param = getattr(exc, "param", None)
    if isinstance(exc, stripe.CardError):
        # The SDK keeps the decline code on the error object, not on the exception.
        error = getattr(exc, "error", None)
        return CardError(
            exc.user_message or CardError.default_message,
            code=code or "card_declined",
            decline_code=getattr(error, "decline_code", None) or None,
            param=param,
        )
    if isinstance(exc, stripe.RateLimitError):
        return ProviderUnavailable(code="rate_limited")
    if isinstance(exc, stripe.APIConnectionError):
        return ProviderUnavailable()
    if isinstance(exc, stripe.IdempotencyError):
        return ProviderError(
            "This request conflicts with an earlier one.", code="idempotency_error", http_status=409
        )
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return ProviderUnavailable("The payment service is not configured correctly.", code="provider_auth")
    if isinstance(exc, stripe.InvalidRequestError):
        if getattr(exc, "http_status", None) == 404:
            return ProviderError(
                "No such object at the payment provider.", code="resource_missing", http_status=404
            )
        return ProviderError(
            "The payment provider rejected the request.",
            code=code or "invalid_request",
            param=param,
            http_status=400,
        )
    status = getattr(exc, "http_status", None) or 0
    if status == 409:
        # A lock held by a concurrent request on the object, or a request with this key still in
        # flight (lock_timeout, idempotency_key_in_use): it clears by itself, so "try again".
        return ProviderUnavailable(
            "The payment service is busy with this payment. Please try again in a moment.",
            code="provider_busy",
        )
    return ProviderUnavailable() if status >= 500 else ProviderError()


class StripeGateway(PaymentGateway):
    """PaymentGateway over Stripe's API (or the emulator at PAYMENTS['API_BASE'])."""

    def __init__(self) -> None:
        s = payments_settings
        self.client = stripe.StripeClient(
            s.SECRET_KEY or "sk_test_unset",
            stripe_version=s.API_VERSION,
            base_addresses={"api": s.API_BASE} if s.API_BASE else None,
            max_network_retries=int(s.RETRY_ATTEMPTS),
            http_client=BackoffHTTPClient(
                timeout=float(s.TIMEOUT),
                initial_delay=float(s.RETRY_DELAY),
                max_delay=float(s.RETRY_MAX_DELAY),
            ),
        )

    # Plumbing ---------------------------------------------------------------------

    def _call(self, operation: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the SDK, log the outcome (never secrets), translate its errors."""
        started = time.monotonic()
        options = kwargs.get("options") or {}
        fields = {
            "operation": operation,
            "idempotency_key": options.get("idempotency_key", ""),
            "target": args[0] if args and isinstance(args[0], str) else "",
        }
        try:
            result = fn(*args, **kwargs)
        except stripe.StripeError as exc:
            error = _translate(exc)
            metrics.STRIPE_REQUESTS.labels(operation=operation, outcome=metrics.label(error.code)).inc()
            timeline.note_call(
                timeline.CallInfo(
                    operation,
                    fields["idempotency_key"],
                    error.code or "error",
                    getattr(exc, "request_id", None) or "",
                )
            )
            metrics.STRIPE_DURATION.labels(operation=operation).observe(time.monotonic() - started)
            logger.warning(
                "stripe call failed",
                extra={
                    **fields,
                    "error_code": error.code,
                    "stripe_code": getattr(exc, "code", None),
                    "http_status": getattr(exc, "http_status", None),
                    "retryable": getattr(error, "retryable", False),
                    "request_id": getattr(exc, "request_id", None),
                    "duration_ms": round((time.monotonic() - started) * 1000, 2),
                },
            )
            raise error from None
        metrics.STRIPE_REQUESTS.labels(operation=operation, outcome="ok").inc()
        response = getattr(result, "last_response", None)
        timeline.note_call(
            timeline.CallInfo(
                operation, fields["idempotency_key"], "ok", getattr(response, "request_id", None) or ""
            )
        )
        metrics.STRIPE_DURATION.labels(operation=operation).observe(time.monotonic() - started)
        logger.info(
            "stripe call",
            extra={
                **fields,
                "stripe_id": getattr(result, "id", None),
                "duration_ms": round((time.monotonic() - started) * 1000, 2),
            },
        )
        return result

    def _list(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        """One page of a Stripe list as its JSON: the mappers read plain dicts, and the SDK's
        objects for a page of 100 expanded intents cost several times the request itself."""
        response = self.client.raw_request("get", path, **params)
        data: dict[str, Any] = response.data
        return data

    @staticmethod
    def _write(key: str) -> dict[str, Any]:
        return {"idempotency_key": key}

    # Shapes: the pure mappers live in stripe_objects; these name them for the contract.

    def intent_from_object(self, obj: Any) -> IntentInfo:
        return stripe_objects.intent_info(obj)

    def checkout_from_object(self, obj: Any) -> CheckoutInfo:
        return stripe_objects.checkout_info(obj)

    def refund_from_object(self, obj: Any) -> RefundInfo:
        return stripe_objects.refund_info(obj)

    def dispute_from_object(self, obj: Any) -> DisputeInfo:
        return stripe_objects.dispute_info(obj)

    def charge_from_object(self, obj: Any) -> ChargeInfo:
        return stripe_objects.charge_info(obj)

    def event_from_payload(self, payload: dict[str, Any]) -> EventInfo:
        return stripe_objects.event_info(payload)

    def check_reachable(self) -> None:
        self._call("event.list", self.client.v1.events.list, params={"limit": 1})

    # Payment intents ---------------------------------------------------------------

    _EXPAND = ("payment_method", "latest_charge")

    def create_intent(
        self,
        *,
        amount: int,
        currency: str,
        idempotency_key: str,
        metadata: dict[str, str],
        description: str = "",
        customer_id: str = "",
        payment_method_id: str = "",
        confirm: bool = False,
        save_payment_method: bool = False,
    ) -> IntentInfo:
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency,
            "payment_method_types": ["card"],
            "metadata": metadata,
            "expand": list(self._EXPAND),
        }
        if description:
            params["description"] = description
        if customer_id:
            params["customer"] = customer_id
        if payment_method_id:
            params["payment_method"] = payment_method_id
        if confirm:
            params["confirm"] = True
        if save_payment_method:
            params["setup_future_usage"] = "off_session"
        intent = self._call(
            "payment_intent.create",
            self.client.v1.payment_intents.create,
            params=params,
            options=self._write(idempotency_key),
        )
        return self.intent_from_object(intent)

    def retrieve_intent(self, intent_id: str) -> IntentInfo:
        intent = self._call(
            "payment_intent.retrieve",
            self.client.v1.payment_intents.retrieve,
            intent_id,
            params={"expand": list(self._EXPAND)},
        )
        return self.intent_from_object(intent)

    def set_intent_payment_method(
        self, intent_id: str, *, payment_method_id: str, idempotency_key: str
    ) -> IntentInfo:
        intent = self._call(
            "payment_intent.update",
            self.client.v1.payment_intents.update,
            intent_id,
            params={"payment_method": payment_method_id, "expand": list(self._EXPAND)},
            options=self._write(idempotency_key),
        )
        return self.intent_from_object(intent)

    def confirm_intent(self, intent_id: str, *, idempotency_key: str) -> IntentInfo:
        intent = self._call(
            "payment_intent.confirm",
            self.client.v1.payment_intents.confirm,
            intent_id,
            params={"expand": list(self._EXPAND)},
            options=self._write(idempotency_key),
        )
        return self.intent_from_object(intent)

    def cancel_intent(self, intent_id: str, *, idempotency_key: str) -> IntentInfo:
        intent = self._call(
            "payment_intent.cancel",
            self.client.v1.payment_intents.cancel,
            intent_id,
            options=self._write(idempotency_key),
        )
        return self.intent_from_object(intent)

    def list_intents(
        self, *, created_gte: int | None = None, cursor: str | None = None, limit: int = 100
    ) -> Page[IntentInfo]:
        params: dict[str, Any] = {"limit": limit, "expand": ["data.latest_charge"]}
        if created_gte:
            params["created"] = {"gte": created_gte}
        if cursor:
            params["starting_after"] = cursor
        result = self._call("payment_intent.list", self._list, path="/v1/payment_intents", params=params)
        return stripe_objects.page(result, self.intent_from_object)

    # Checkout ---------------------------------------------------------------------

    def create_checkout_session(
        self,
        *,
        amount: int,
        currency: str,
        product_name: str,
        success_url: str,
        cancel_url: str,
        client_reference_id: str,
        metadata: dict[str, str],
        expires_at: datetime,
        idempotency_key: str,
        customer_id: str = "",
    ) -> CheckoutInfo:
        params: dict[str, Any] = {
            "mode": "payment",
            "payment_method_types": ["card"],
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": currency,
                        "unit_amount": amount,
                        "product_data": {"name": product_name[:250]},
                    },
                }
            ],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "client_reference_id": client_reference_id,
            "metadata": metadata,
            "payment_intent_data": {"metadata": dict([*metadata.items(), CHECKOUT_INTENT_MARK])},
            # Rounded up: Stripe refuses a session that expires in under 30 minutes.
            "expires_at": math.ceil(expires_at.timestamp()),
        }
        if customer_id:
            params["customer"] = customer_id
        session = self._call(
            "checkout.session.create",
            self.client.v1.checkout.sessions.create,
            params=params,
            options=self._write(idempotency_key),
        )
        return self.checkout_from_object(session)

    def retrieve_checkout_session(self, session_id: str) -> CheckoutInfo:
        session = self._call(
            "checkout.session.retrieve", self.client.v1.checkout.sessions.retrieve, session_id
        )
        return self.checkout_from_object(session)

    def expire_checkout_session(self, session_id: str, *, idempotency_key: str) -> CheckoutInfo:
        session = self._call(
            "checkout.session.expire",
            self.client.v1.checkout.sessions.expire,
            session_id,
            options=self._write(idempotency_key),
        )
        return self.checkout_from_object(session)

    # Refunds ---------------------------------------------------------------------

    def create_refund(
        self,
        *,
        intent_id: str,
        amount: int,
        reason: str,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> RefundInfo:
        params: dict[str, Any] = {"payment_intent": intent_id, "amount": amount, "metadata": metadata}
        if reason in STRIPE_REFUND_REASONS:
            params["reason"] = reason
        refund = self._call(
            "refund.create",
            self.client.v1.refunds.create,
            params=params,
            options=self._write(idempotency_key),
        )
        return self.refund_from_object(refund)

    def list_refunds(
        self,
        *,
        intent_id: str | None = None,
        created_gte: int | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[RefundInfo]:
        params: dict[str, Any] = {"limit": limit}
        if intent_id:
            params["payment_intent"] = intent_id
        if created_gte:
            params["created"] = {"gte": created_gte}
        if cursor:
            params["starting_after"] = cursor
        result = self._call("refund.list", self._list, path="/v1/refunds", params=params)
        return stripe_objects.page(result, self.refund_from_object)

    # Customers and cards -----------------------------------------------------------

    def create_customer(
        self, *, email: str, name: str, metadata: dict[str, str], idempotency_key: str
    ) -> str:
        params: dict[str, Any] = {"metadata": metadata}
        if email:
            params["email"] = email
        if name:
            params["name"] = name
        customer = self._call(
            "customer.create",
            self.client.v1.customers.create,
            params=params,
            options=self._write(idempotency_key),
        )
        return customer.id

    def list_payment_methods(self, customer_id: str) -> list[PaymentMethodInfo]:
        result = self._call(
            "payment_method.list",
            self.client.v1.payment_methods.list,
            params={"customer": customer_id, "type": "card", "limit": 100},
        )
        return [stripe_objects.payment_method_info(item) for item in result.data]

    def retrieve_payment_method(self, payment_method_id: str) -> PaymentMethodInfo:
        return stripe_objects.payment_method_info(
            self._call("payment_method.retrieve", self.client.v1.payment_methods.retrieve, payment_method_id)
        )

    def detach_payment_method(self, payment_method_id: str, *, idempotency_key: str) -> None:
        self._call(
            "payment_method.detach",
            self.client.v1.payment_methods.detach,
            payment_method_id,
            options=self._write(idempotency_key),
        )

    def create_setup_intent(self, *, customer_id: str, idempotency_key: str) -> SetupIntentInfo:
        intent = self._call(
            "setup_intent.create",
            self.client.v1.setup_intents.create,
            params={"customer": customer_id, "payment_method_types": ["card"], "usage": "off_session"},
            options=self._write(idempotency_key),
        )
        return SetupIntentInfo(id=intent.id, client_secret=intent.client_secret, status=intent.status)

    # Events --------------------------------------------------------------------------

    def list_events(
        self, *, created_gt: int | None = None, cursor: str | None = None, limit: int = 100
    ) -> Page[EventInfo]:
        params: dict[str, Any] = {"limit": limit}
        if created_gt:
            params["created"] = {"gt": created_gt}
        if cursor:
            params["starting_after"] = cursor
        result = self._call("event.list", self._list, path="/v1/events", params=params)
        return stripe_objects.page(result, stripe_objects.event_info)

    def verify_webhook(self, payload: bytes, signature_header: str) -> EventInfo:
        secrets = payments_settings.WEBHOOK_SECRETS
        if not signature_header or not secrets:
            raise WebhookSignatureError()
        for secret in secrets:
            try:
                # The signature alone: the body is read below as plain JSON, exactly as Stripe sent it.
                stripe.WebhookSignature.verify_header(
                    payload, signature_header, secret, tolerance=payments_settings.WEBHOOK_TOLERANCE
                )
            except (stripe.SignatureVerificationError, UnicodeDecodeError):
                continue
            return stripe_objects.event_info(stripe_objects.event_body(payload))
        raise WebhookSignatureError()
