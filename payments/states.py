"""Payment and refund statuses and the transitions allowed between them."""

from __future__ import annotations

from django.db import models

from payments.exceptions import IllegalTransition


class PaymentStatus(models.TextChoices):
    CREATED = "created", "Created"
    REQUIRES_ACTION = "requires_action", "Requires action"
    PROCESSING = "processing", "Processing"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"
    PARTIALLY_REFUNDED = "partially_refunded", "Partially refunded"
    REFUNDED = "refunded", "Refunded"
    DISPUTED = "disputed", "Disputed"


class RefundStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    REQUIRES_ACTION = "requires_action", "Requires action"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


S = PaymentStatus

# Only forward moves are listed, so applying an event that is not in the table is how
# an out-of-order webhook is told apart from news. A failed attempt may still succeed
# (Stripe lets the same intent be confirmed again with another card).
PAYMENT_TRANSITIONS: dict[str, frozenset[str]] = {
    S.CREATED: frozenset({S.REQUIRES_ACTION, S.PROCESSING, S.SUCCEEDED, S.FAILED, S.CANCELED}),
    S.REQUIRES_ACTION: frozenset({S.PROCESSING, S.SUCCEEDED, S.FAILED, S.CANCELED}),
    S.PROCESSING: frozenset({S.REQUIRES_ACTION, S.SUCCEEDED, S.FAILED, S.CANCELED}),
    S.FAILED: frozenset({S.REQUIRES_ACTION, S.PROCESSING, S.SUCCEEDED, S.CANCELED}),
    S.SUCCEEDED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED, S.DISPUTED}),
    S.PARTIALLY_REFUNDED: frozenset({S.REFUNDED, S.DISPUTED}),
    S.DISPUTED: frozenset({S.SUCCEEDED, S.PARTIALLY_REFUNDED, S.REFUNDED}),
    # Money can still arrive for a canceled attempt (the payer was paying when we canceled):
    # it is recorded as a success and refunded at once (services._refund_unwanted_payment).
    S.CANCELED: frozenset({S.SUCCEEDED}),
    S.REFUNDED: frozenset(),
}

# A refund that fails after it succeeded (a closed card) gives the money back to us: the only
# moves backwards, made from the refunds that still hold money, never from an event's order.
REFUND_REVERSALS: dict[str, frozenset[str]] = {
    S.REFUNDED: frozenset({S.PARTIALLY_REFUNDED, S.SUCCEEDED}),
    S.PARTIALLY_REFUNDED: frozenset({S.SUCCEEDED}),
}

R = RefundStatus

# A refund's moves, as Stripe's refund lifecycle: pending (or requires_action) until it settles as
# succeeded, failed or canceled; a succeeded refund can still fail later (refund.failed, a closed
# card). Settled never goes back to pending, so an older refund.updated arriving late changes nothing.
REFUND_TRANSITIONS: dict[str, frozenset[str]] = {
    R.PENDING: frozenset({R.REQUIRES_ACTION, R.SUCCEEDED, R.FAILED, R.CANCELED}),
    R.REQUIRES_ACTION: frozenset({R.PENDING, R.SUCCEEDED, R.FAILED, R.CANCELED}),
    R.SUCCEEDED: frozenset({R.FAILED, R.CANCELED}),
    R.FAILED: frozenset(),
    R.CANCELED: frozenset(),
}
# Refunds whose amount is no longer the payer's to refund again: on its way back, or back.
REFUND_HOLDS_MONEY = frozenset({R.PENDING, R.REQUIRES_ACTION, R.SUCCEEDED})
REFUND_FINAL = frozenset({R.FAILED, R.CANCELED})


def refund_can_move(current: str, target: str, *, known_to_provider: bool) -> bool:
    """True when a refund may move from `current` to `target`. One we gave up on before Stripe
    answered (failed or canceled with no Stripe id) may still have been made: Stripe's settled
    word about it counts."""
    if current in REFUND_FINAL and not known_to_provider:
        return target in REFUND_FINAL | {R.SUCCEEDED} and target != current
    return target in REFUND_TRANSITIONS.get(current, frozenset())


OPEN_STATUSES = frozenset({S.CREATED, S.REQUIRES_ACTION, S.PROCESSING})
PAID_STATUSES = frozenset({S.SUCCEEDED, S.PARTIALLY_REFUNDED, S.REFUNDED, S.DISPUTED})
REFUNDABLE_STATUSES = frozenset({S.SUCCEEDED, S.PARTIALLY_REFUNDED})


def can_transition(current: str, target: str) -> bool:
    """True when a payment may move from `current` to `target`."""
    return target in PAYMENT_TRANSITIONS.get(current, frozenset())


def check_transition(current: str, target: str) -> None:
    """Raise IllegalTransition unless the move is allowed."""
    if not can_transition(current, target):
        raise IllegalTransition(f"A payment cannot move from {current} to {target}.")


# Refund reasons in people's words: Stripe's three, and the ones this app gives.
REFUND_REASON_LABELS = {
    "requested_by_customer": "Requested by the customer",
    "duplicate": "Duplicate payment",
    "fraudulent": "Fraudulent payment",
    "expired_uncaptured_charge": "Uncaptured charge expired",
}


def refund_reason_label(reason: str) -> str:
    """A refund's reason for people ("requested_by_customer" → "Requested by the customer")."""
    return REFUND_REASON_LABELS.get(reason, reason.replace("_", " ").capitalize())
