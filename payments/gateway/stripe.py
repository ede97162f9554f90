"""The Stripe provider: the only module that imports `stripe`. Pins the API version, retries once over."""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar

import stripe

from payments.conf import payments_settings
from payments.exceptions import (
    CardError,
    PaymentError,
    ProviderError,
    ProviderUnavailable,
    WebhookPayloadError,
    WebhookSignatureError,
)
from payments.gateway.base import (
    ChargeInfo,
    ChargeStatus,
    CheckoutInfo,
    CheckoutPaymentStatus,
    CheckoutStatus,
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
from payments.states import PaymentStatus, RefundStatus

logger = logging.getLogger(__name__)

# The reasons Stripe accepts on a refund; anything else travels in metadata only.
STRIPE_REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})

_REFUND_STATUS = {
    "pending": RefundStatus.PENDING,
    "requires_action": RefundStatus.REQUIRES_ACTION,
    "succeeded": RefundStatus.SUCCEEDED,
    "failed": RefundStatus.FAILED,
    "canceled": RefundStatus.CANCELED,
}


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
        return remaining is None or remaining > longest_sleep + self.MIN_CALL_SECONDS

    def _sleep_time_seconds(self, num_retries: int) -> float:
        delay = min(self._initial_delay * (2 ** (num_retries - 1)), self._max_delay)
        return delay * (0.5 + random.random() / 2)  # noqa: S311  (jitter, not security)


def _as_dict(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    # for_json: the SDK turns decimal-string fields into Decimal, which a stored payload cannot hold.
    return obj.to_dict(for_json=True)


def _id_of(value: Any) -> str:
    """A field that is an id, or an expanded object with an id."""
    if not value:
        return ""
    if isinstance(value, str):
        return value
    return value.get("id", "") or ""


class _Identified(Protocol):
    @property
    def id(self) -> str: ...


E = TypeVar("E", bound=StrEnum)
T = TypeVar("T", bound=_Identified)

# https://docs.stripe.com/api/disputes/object#dispute_object-status
_DISPUTE_CLOSED_IN_OUR_FAVOUR = frozenset({"won", "warning_closed"})


def _choice(kind: type[E], value: Any, default: E) -> E:
    """Stripe's word as the contract's enum; one it does not list yet acts on nothing (`default`)."""
    try:
        return kind(value)
    except ValueError:
        return default


def _timestamp(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if value else None


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


def _event_body(payload: bytes) -> dict[str, Any]:
    """A signed body, checked to be shaped like a Stripe event (signed is not the same as sane)."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        raise WebhookPayloadError("The webhook body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise WebhookPayloadError()
    event_id, event_type, body = data.get("id"), data.get("type"), data.get("data")
    if not (isinstance(event_id, str) and 0 < len(event_id) <= 255):
        raise WebhookPayloadError("The event has no usable id.")
    if not (isinstance(event_type, str) and 0 < len(event_type) <= 128):
        raise WebhookPayloadError("The event has no usable type.")
    if not (isinstance(body, dict) and isinstance(body.get("object"), dict)):
        raise WebhookPayloadError("The event carries no object.")
    return data


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
            logger.warning(
                "stripe call failed",
                extra={
                    **fields,
                    "error_code": error.code,
                    "stripe_code": getattr(exc, "code", None),
                    "http_status": getattr(exc, "http_status", None),
                    "retryable": getattr(error, "retryable", False),
                    "request_id": getattr(exc, "request_id", None),
                    "duration_ms": round((time.monotonic() - started) * 1000),
                },
            )
            raise error from None
        logger.info(
            "stripe call",
            extra={
                **fields,
                "stripe_id": getattr(result, "id", None),
                "duration_ms": round((time.monotonic() - started) * 1000),
            },
        )
        return result

    @staticmethod
    def _write(key: str) -> dict[str, Any]:
        return {"idempotency_key": key}

    # Shapes -----------------------------------------------------------------------

    def intent_from_object(self, obj: Any) -> IntentInfo:
        data = _as_dict(obj)
        provider_status = data.get("status", "")
        error = data.get("last_payment_error") or {}
        status = {
            "requires_payment_method": PaymentStatus.FAILED if error else PaymentStatus.CREATED,
            "requires_confirmation": PaymentStatus.CREATED,
            "requires_action": PaymentStatus.REQUIRES_ACTION,
            "processing": PaymentStatus.PROCESSING,
            "requires_capture": PaymentStatus.PROCESSING,
            "succeeded": PaymentStatus.SUCCEEDED,
            "canceled": PaymentStatus.CANCELED,
        }.get(provider_status, PaymentStatus.PROCESSING)
        card: dict[str, Any] = {}
        method = data.get("payment_method")
        if isinstance(method, dict):
            card = method.get("card") or {}
        charge = data.get("latest_charge")
        if isinstance(charge, dict):
            card = card or ((charge.get("payment_method_details") or {}).get("card") or {})
        return IntentInfo(
            id=data["id"],
            status=status,
            provider_status=provider_status,
            amount=int(data.get("amount") or 0),
            currency=(data.get("currency") or "").lower(),
            client_secret=data.get("client_secret") or "",
            customer_id=_id_of(data.get("customer")),
            charge_id=_id_of(charge),
            payment_method_id=_id_of(method) or _id_of(error.get("payment_method")),
            card_brand=card.get("brand") or "",
            card_last4=card.get("last4") or "",
            error_code=error.get("code") or "",
            decline_code=error.get("decline_code") or "",
            error_message=error.get("message") or "",
            next_action=data.get("next_action") or None,
            metadata=dict(data.get("metadata") or {}),
            amount_refunded=charge.get("amount_refunded") if isinstance(charge, dict) else None,
        )

    def checkout_from_object(self, obj: Any) -> CheckoutInfo:
        data = _as_dict(obj)
        return CheckoutInfo(
            id=data["id"],
            url=data.get("url") or "",
            status=_choice(CheckoutStatus, data.get("status"), CheckoutStatus.OPEN),
            payment_status=_choice(
                CheckoutPaymentStatus, data.get("payment_status"), CheckoutPaymentStatus.UNPAID
            ),
            intent_id=_id_of(data.get("payment_intent")),
            client_reference_id=data.get("client_reference_id") or "",
            customer_id=_id_of(data.get("customer")),
            expires_at=_timestamp(data.get("expires_at")),
            metadata=dict(data.get("metadata") or {}),
            amount_total=None if data.get("amount_total") is None else int(data["amount_total"]),
            currency=(data.get("currency") or "").lower(),
        )

    def refund_from_object(self, obj: Any) -> RefundInfo:
        data = _as_dict(obj)
        return RefundInfo(
            id=data["id"],
            status=_REFUND_STATUS.get(data.get("status") or "", RefundStatus.PENDING),
            amount=int(data.get("amount") or 0),
            currency=(data.get("currency") or "").lower(),
            intent_id=_id_of(data.get("payment_intent")),
            charge_id=_id_of(data.get("charge")),
            reason=data.get("reason") or "",
            failure_reason=data.get("failure_reason") or "",
            metadata=dict(data.get("metadata") or {}),
        )

    def dispute_from_object(self, obj: Any) -> DisputeInfo:
        data = _as_dict(obj)
        evidence = data.get("evidence_details") or {}
        return DisputeInfo(
            id=data["id"],
            charge_id=_id_of(data.get("charge")),
            intent_id=_id_of(data.get("payment_intent")),
            amount=int(data.get("amount") or 0),
            currency=(data.get("currency") or "").lower(),
            reason=data.get("reason") or "",
            status=data.get("status") or "",
            evidence_due_by=_timestamp(evidence.get("due_by")),
            closed_in_our_favour=data.get("status") in _DISPUTE_CLOSED_IN_OUR_FAVOUR,
        )

    def charge_from_object(self, obj: Any) -> ChargeInfo:
        data = _as_dict(obj)
        card = (data.get("payment_method_details") or {}).get("card") or {}
        listed = data.get("refunds")
        refunds = None
        if isinstance(listed, dict) and not listed.get("has_more"):
            refunds = [self.refund_from_object(item) for item in listed.get("data") or []]
        return ChargeInfo(
            id=data["id"],
            intent_id=_id_of(data.get("payment_intent")),
            status=_choice(ChargeStatus, data.get("status"), ChargeStatus.PENDING),
            paid=bool(data.get("paid")),
            amount=int(data.get("amount") or 0),
            amount_refunded=int(data.get("amount_refunded") or 0),
            currency=(data.get("currency") or "").lower(),
            card_brand=card.get("brand") or "",
            card_last4=card.get("last4") or "",
            refunds=refunds,
        )

    def check_reachable(self) -> None:
        self._call("event.list", self.client.v1.events.list, params={"limit": 1})

    def event_from_payload(self, payload: dict[str, Any]) -> EventInfo:
        return self._event_info(payload)

    @staticmethod
    def _method_info(obj: Any) -> PaymentMethodInfo:
        data = _as_dict(obj)
        card = data.get("card") or {}
        return PaymentMethodInfo(
            id=data["id"],
            brand=card.get("brand") or "",
            last4=card.get("last4") or "",
            exp_month=card.get("exp_month"),
            exp_year=card.get("exp_year"),
            customer_id=_id_of(data.get("customer")),
        )

    @staticmethod
    def _event_info(data: dict[str, Any]) -> EventInfo:
        return EventInfo(
            id=data["id"],
            type=data.get("type") or "",
            created=int(data.get("created") or 0),
            api_version=data.get("api_version") or "",
            livemode=bool(data.get("livemode")),
            object=(data.get("data") or {}).get("object") or {},
            raw=data,
        )

    @staticmethod
    def _page(result: Any, convert: Callable[[Any], T]) -> Page[T]:
        items = [convert(item) for item in result.data]
        last = items[-1].id if items else None
        return Page(items=items, has_more=bool(result.has_more), next_cursor=last)

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
        result = self._call("payment_intent.list", self.client.v1.payment_intents.list, params=params)
        return self._page(result, self.intent_from_object)

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
            "payment_intent_data": {"metadata": metadata},
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

    def retrieve_refund(self, refund_id: str) -> RefundInfo:
        return self.refund_from_object(
            self._call("refund.retrieve", self.client.v1.refunds.retrieve, refund_id)
        )

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
        result = self._call("refund.list", self.client.v1.refunds.list, params=params)
        return self._page(result, self.refund_from_object)

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
        return [self._method_info(item) for item in result.data]

    def retrieve_payment_method(self, payment_method_id: str) -> PaymentMethodInfo:
        return self._method_info(
            self._call("payment_method.retrieve", self.client.v1.payment_methods.retrieve, payment_method_id)
        )

    def attach_payment_method(
        self, payment_method_id: str, *, customer_id: str, idempotency_key: str
    ) -> PaymentMethodInfo:
        method = self._call(
            "payment_method.attach",
            self.client.v1.payment_methods.attach,
            payment_method_id,
            params={"customer": customer_id},
            options=self._write(idempotency_key),
        )
        return self._method_info(method)

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
        result = self._call("event.list", self.client.v1.events.list, params=params)
        return self._page(result, lambda item: self._event_info(_as_dict(item)))

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
            return self._event_info(_event_body(payload))
        raise WebhookSignatureError()
