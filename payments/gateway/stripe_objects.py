"""Stripe's objects as the gateway contract's records: pure functions, no SDK, no network."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from payments.exceptions import WebhookPayloadError
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
    PaymentMethodInfo,
    RefundInfo,
)
from payments.states import PaymentStatus, RefundStatus

# https://docs.stripe.com/api/payment_intents/object#payment_intent_object-status
_INTENT_STATUS = {
    "requires_confirmation": PaymentStatus.CREATED,
    "requires_action": PaymentStatus.REQUIRES_ACTION,
    "processing": PaymentStatus.PROCESSING,
    "requires_capture": PaymentStatus.PROCESSING,
    "succeeded": PaymentStatus.SUCCEEDED,
    "canceled": PaymentStatus.CANCELED,
}

# https://docs.stripe.com/api/refunds/object#refund_object-status
_REFUND_STATUS = {
    "pending": RefundStatus.PENDING,
    "requires_action": RefundStatus.REQUIRES_ACTION,
    "succeeded": RefundStatus.SUCCEEDED,
    "failed": RefundStatus.FAILED,
    "canceled": RefundStatus.CANCELED,
}

# https://docs.stripe.com/api/disputes/object#dispute_object-status
_DISPUTE_CLOSED_IN_OUR_FAVOUR = frozenset({"won", "warning_closed"})


class _Identified(Protocol):
    @property
    def id(self) -> str: ...


E = TypeVar("E", bound=StrEnum)
T = TypeVar("T", bound=_Identified)


def as_dict(obj: Any) -> dict[str, Any]:
    """A StripeObject (or a dict, or None) as a plain JSON-safe dict."""
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


def _choice(kind: type[E], value: Any, default: E) -> E:
    """Stripe's word as the contract's enum; one it does not list yet acts on nothing (`default`)."""
    try:
        return kind(value)
    except ValueError:
        return default


def _timestamp(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if value else None


def intent_info(obj: Any) -> IntentInfo:
    """A PaymentIntent (ideally with payment_method and latest_charge expanded)."""
    data = as_dict(obj)
    provider_status = data.get("status", "")
    error = data.get("last_payment_error") or {}
    if provider_status == "requires_payment_method":
        # Back to "requires_payment_method" after an attempt means that attempt failed.
        status = PaymentStatus.FAILED if error else PaymentStatus.CREATED
    else:
        # A status Stripe adds later is "in flight": the webhook or reconciliation settles it.
        status = _INTENT_STATUS.get(provider_status, PaymentStatus.PROCESSING)
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


def checkout_info(obj: Any) -> CheckoutInfo:
    """A Checkout Session."""
    data = as_dict(obj)
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


def refund_info(obj: Any) -> RefundInfo:
    """A Refund; a status Stripe adds later counts as pending (still holding money)."""
    data = as_dict(obj)
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


def dispute_info(obj: Any) -> DisputeInfo:
    """A Dispute; `status` keeps Stripe's own word for staff."""
    data = as_dict(obj)
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


def charge_info(obj: Any) -> ChargeInfo:
    """A Charge; its refunds only when the embedded list is complete (else None: list them)."""
    data = as_dict(obj)
    card = (data.get("payment_method_details") or {}).get("card") or {}
    listed = data.get("refunds")
    refunds = None
    if isinstance(listed, dict) and not listed.get("has_more"):
        refunds = [refund_info(item) for item in listed.get("data") or []]
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


def payment_method_info(obj: Any) -> PaymentMethodInfo:
    """A card PaymentMethod."""
    data = as_dict(obj)
    card = data.get("card") or {}
    return PaymentMethodInfo(
        id=data["id"],
        brand=card.get("brand") or "",
        last4=card.get("last4") or "",
        exp_month=card.get("exp_month"),
        exp_year=card.get("exp_year"),
        customer_id=_id_of(data.get("customer")),
    )


def event_info(obj: Any) -> EventInfo:
    """An Event, its payload kept whole in `raw`."""
    data = as_dict(obj)
    return EventInfo(
        id=data["id"],
        type=data.get("type") or "",
        created=int(data.get("created") or 0),
        api_version=data.get("api_version") or "",
        livemode=bool(data.get("livemode")),
        object=(data.get("data") or {}).get("object") or {},
        raw=data,
    )


def event_body(payload: bytes) -> dict[str, Any]:
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


def page(result: Any, convert: Callable[[Any], T]) -> Page[T]:
    """A Stripe list (its JSON, or the SDK's object) as a Page; the cursor is the last item's id
    (Stripe's starting_after)."""
    data, has_more = (
        (result.get("data") or [], result.get("has_more"))
        if isinstance(result, dict)
        else (result.data, result.has_more)
    )
    items = [convert(item) for item in data]
    last = items[-1].id if items else None
    return Page(items=items, has_more=bool(has_more), next_cursor=last)
