"""Fresh signed Stripe events of Stripe's own fixture shape, one per request."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path

from stripe_emulator.strict import stripe_object


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe would send with `body`."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def intent_succeeded(*, intent_id: str, amount: int = 1099, metadata: dict | None = None) -> dict:
    """A `payment_intent.succeeded` event around Stripe's example PaymentIntent."""
    intent = stripe_object(
        "payment_intent",
        id=intent_id,
        amount=amount,
        amount_received=amount,
        status="succeeded",
        last_payment_error=None,
        metadata=metadata or {},
    )
    return {
        **stripe_object("event"),
        "id": f"evt_{secrets.token_hex(12)}",
        "type": "payment_intent.succeeded",
        "created": int(time.time()),
        "api_version": "2025-03-31.basil",
        "data": {"object": intent, "previous_attributes": None},
    }


def card_payment(*, intent_id: str, amount: int, metadata: dict) -> list[dict]:
    """What Stripe sends for one card payment, in its order: payment_intent.created (nothing to
    do for us), charge.succeeded and payment_intent.succeeded, around Stripe's example objects."""
    created = stripe_object(
        "payment_intent", id=intent_id, amount=amount, currency="usd", status="requires_payment_method",
        last_payment_error=None, metadata=metadata,
    )  # fmt: skip
    charge = stripe_object(
        "charge", id=f"ch_{intent_id.removeprefix('pi_')}", payment_intent=intent_id, amount=amount,
        amount_captured=amount, currency="usd", status="succeeded", paid=True, metadata=metadata,
    )  # fmt: skip
    succeeded = intent_succeeded(intent_id=intent_id, amount=amount, metadata=metadata)
    succeeded["data"]["object"]["currency"] = "usd"
    return [
        _event("payment_intent.created", created),
        _event("charge.succeeded", charge),
        succeeded,
    ]


def _event(event_type: str, obj: dict) -> dict:
    return {
        **stripe_object("event"),
        "id": f"evt_{secrets.token_hex(12)}",
        "type": event_type,
        "created": int(time.time()),
        "api_version": "2025-03-31.basil",
        "data": {"object": obj, "previous_attributes": None},
    }


def write_events(path: Path, count: int, secret: str) -> None:
    """`count` distinct signed events, one per line: the signature, a tab, the body."""
    timestamp = int(time.time())
    with path.open("w") as out:
        for _ in range(count):
            body = json.dumps(
                intent_succeeded(intent_id=f"pi_{secrets.token_hex(12)}"), separators=(",", ":")
            )
            out.write(f"{sign(body.encode(), secret, timestamp)}\t{body}\n")
