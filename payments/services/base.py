"""What every payment service shares: the terms of a payment, its result, locks, metadata and log fields."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import DatabaseError, models, transaction
from django.db.models import Subquery
from django.dispatch import Signal

from payments import money, signals, timeline
from payments.exceptions import (
    IllegalTransition,
    PaymentError,
)
from payments.gateway.base import (
    IntentInfo,
)
from payments.models import Customer, Installation, Payment, PaymentEvent, Refund
from payments.states import (
    PaymentStatus,
)

# One logger for every services module: the records keep the name they always had.
logger = logging.getLogger("payments.services")

_STATUS_SIGNALS: dict[str, Signal] = {
    PaymentStatus.SUCCEEDED: signals.payment_succeeded,
    PaymentStatus.FAILED: signals.payment_failed,
    PaymentStatus.CANCELED: signals.payment_canceled,
}
# Stripe refuses a Checkout Session that expires sooner than 30 minutes after it is created.
CHECKOUT_MIN_AHEAD = timedelta(minutes=31)
# The reason recorded on the automatic refund of a payment that arrived after its attempt was canceled.
PAID_AFTER_CANCEL_REASON = "paid_after_cancel"


@dataclass(frozen=True)
class PaymentTerms:
    """What the host app asks to be paid: for what, by whom, how much (minor units) and why.

    Checked on creation: a known currency, a chargeable total, and total = subtotal + fee.
    """

    payable: models.Model
    owner: Any
    subtotal: int
    fee: int
    total: int
    currency: str
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "currency", money.normalize_currency(self.currency))
        money.validate_amount(self.total, self.currency)
        if self.subtotal + self.fee != self.total or self.subtotal < 0 or self.fee < 0:
            raise PaymentError("The total must be the subtotal plus the fee.", code="invalid_amount")

    @classmethod
    def of(cls, payment: Payment) -> PaymentTerms:
        """The terms an earlier attempt was made on (for a retry)."""
        if payment.payable is None:
            raise IllegalTransition("What this payment was for no longer exists.")
        return cls(
            payable=payment.payable,
            owner=payment.owner,
            subtotal=payment.subtotal,
            fee=payment.fee,
            total=payment.total,
            currency=payment.currency,
            description=payment.description,
        )


@dataclass(frozen=True)
class PaymentResult:
    """A payment and the provider's view of its intent (None when nothing was asked of it)."""

    payment: Payment
    intent: IntentInfo | None = None


def _log_extra(payment: Payment, **fields: Any) -> dict:
    return {
        "payment_id": payment.pk,
        "payable": payment.payable_reference,
        "payment_intent": payment.stripe_payment_intent_id,
        **fields,
    }


def is_foreign(metadata: dict[str, str] | None) -> bool:
    """True for an object another installation made: its metadata names another installation.

    Objects without the mark (made in the dashboard, or before it existed) are not foreign; they
    are matched by the Stripe ids stored on our rows only, never by their metadata.
    """
    other = (metadata or {}).get("installation")
    return bool(other) and other != Installation.current_id()


def _payment_metadata(payment: Payment) -> dict[str, str]:
    """What every Stripe object made for a payment carries: whose it is, in this installation."""
    return {
        "installation": Installation.current_id(),
        "payment_uid": str(payment.uid),
        "payment_id": str(payment.pk),
        "payable": payment.payable_reference,
    }


def _send_on_commit(signal: Signal, **kwargs: Any) -> None:
    # robust: a failing receiver (an email that cannot be queued) is logged, never undoes the payment.
    transaction.on_commit(lambda: signal.send_robust(sender=Payment, **kwargs) and None, robust=True)


# The successes of a block run under successes_batched(), gathered as their transactions commit.
_success_batch: ContextVar[list[Payment] | None] = ContextVar("payments_success_batch", default=None)


@contextlib.contextmanager
def successes_batched() -> Iterator[None]:
    """Inside: payments_succeeded is sent once, as the block ends, with every payment whose success
    committed in it (a webhook drain's batch), rather than once per transaction."""
    batch: list[Payment] = []
    token = _success_batch.set(batch)
    try:
        yield
    finally:
        _success_batch.reset(token)
        if batch:
            signals.payments_succeeded.send_robust(sender=Payment, payments=batch)


def _success_on_commit(payment: Payment, reason: str) -> None:
    """payment_succeeded once this commits, and payments_succeeded with it (or with its batch)."""

    def send() -> None:
        signals.payment_succeeded.send_robust(sender=Payment, payment=payment, reason=reason)
        batch = _success_batch.get()
        if batch is None:
            signals.payments_succeeded.send_robust(sender=Payment, payments=[payment])
        else:
            batch.append(payment)

    # A hook registered in a savepoint that rolls back is dropped with it: only committed successes.
    transaction.on_commit(send, robust=True)


def _lock_payment(payment_id: int) -> Payment:
    return Payment.objects.select_for_update(of=("self",)).get(pk=payment_id)


# Starting a payment ------------------------------------------------------------------


def _lock_payable(payable: models.Model, *, customer_of: Any = None) -> str:
    """Serialise payment starts and successes for one payable on the payable's own row.

    With `customer_of` (a user): that user's Stripe customer id, read in the same query ('' when
    they have none yet), as a start needs it next (one round trip fewer)."""
    row = type(payable)._default_manager.select_for_update().filter(pk=payable.pk)
    if customer_of is None:
        row.values_list("pk").get()
        return ""
    customer = Customer.objects.filter(user=customer_of).values("stripe_customer_id")[:1]
    # An expression, not a named annotation: a name could clash with one of the payable's fields.
    return row.values_list(Subquery(customer), flat=True).get() or ""


def _lock_payable_of(payment: Payment) -> None:
    """The same lock, taken by a success: after the payment's own row (a start never waits for a
    payment row while holding this one, so the order cannot deadlock)."""
    # get_for_id: from ContentType's own cache, not a query per payment.
    model = ContentType.objects.get_for_id(payment.content_type_id).model_class()
    if model is not None:
        model._default_manager.select_for_update().filter(pk=payment.object_id).values_list("pk").first()


def payment_id_for(
    *, intent_id: str = "", session_id: str = "", charge_id: str = "", metadata: dict[str, str] | None = None
) -> int | None:
    """The id of the payment a provider object belongs to: by the Stripe ids stored on our rows,
    else (an object whose id we have not stored yet) by this installation's mark in its metadata."""
    for field, value in (
        ("stripe_charge_id", charge_id),
        ("stripe_payment_intent_id", intent_id),
        ("stripe_checkout_session_id", session_id),
    ):
        if value:
            found = Payment.objects.filter(**{field: value}).values_list("pk", flat=True).first()
            if found:
                return found
    metadata = metadata or {}
    if metadata.get("installation") != Installation.current_id():
        return None
    try:
        uid = uuid.UUID(metadata.get("payment_uid") or "")
    except ValueError:
        return None
    return Payment.objects.filter(uid=uid).values_list("pk", flat=True).first()


# The timeline -----------------------------------------------------------------------


@contextlib.contextmanager
def _recorded_call(
    payment: Payment, *, refund: Refund | None = None, into: list[PaymentEvent] | None = None
) -> Iterator[None]:
    """Record the Stripe call made inside (a write at Stripe) on the payment's timeline, whatever
    its outcome; a timeline that cannot be written never fails the payment.

    With `into`, a call that answered is handed over unsaved, for the caller to write in the
    transaction that applies the answer (one transaction fewer); a failed call is written here."""
    timeline.take_call()  # an earlier, unrecorded call is not this one
    answered = False
    try:
        yield
        answered = True
    finally:
        info = timeline.take_call()
        if info is not None:
            entry = PaymentEvent(
                payment=payment,
                refund=refund,
                kind=PaymentEvent.Kind.STRIPE_CALL,
                operation=info.operation,
                idempotency_key=info.idempotency_key,
                outcome=info.outcome,
                request_id=info.request_id,
                cause=timeline.current_cause(),
            )
            if answered and into is not None:
                into.append(entry)
            else:
                _write_entries(payment, [entry])


def _write_entries(payment: Payment, entries: list[PaymentEvent]) -> None:
    """Write timeline entries in a savepoint: a timeline that cannot be written never fails the
    payment (nor the transaction around it)."""
    if not entries:
        return
    try:
        with transaction.atomic():
            PaymentEvent.objects.bulk_create(entries)
    except DatabaseError:
        logger.warning(
            "timeline entry not written", extra=_log_extra(payment, operation=entries[0].operation)
        )


def _record_status(payment: Payment, previous: str, target: str, *, refund: Refund | None = None) -> None:
    """A status change on the timeline, in the transaction that makes it."""
    kind = PaymentEvent.Kind.REFUND_STATUS if refund is not None else PaymentEvent.Kind.STATUS
    PaymentEvent.objects.create(
        payment=payment,
        refund=refund,
        kind=kind,
        from_status=previous,
        to_status=target,
        cause=timeline.current_cause(),
    )
