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


def write_events(path: Path, count: int, secret: str) -> None:
    """`count` distinct signed events, one per line: the signature, a tab, the body."""
    timestamp = int(time.time())
    with path.open("w") as out:
        for _ in range(count):
            body = json.dumps(
                intent_succeeded(intent_id=f"pi_{secrets.token_hex(12)}"), separators=(",", ":")
            )
            out.write(f"{sign(body.encode(), secret, timestamp)}\t{body}\n")
