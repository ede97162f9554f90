"""Moving a payment between statuses (the one place that does) and what a move sets off:
signals, the refund of money that is not a sale, settling refunds."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import models, transaction
from django.utils import timezone

from payments import metrics, money, signals
from payments.exceptions import (
    RefundNotAllowed,
)
from payments.models import Payment, Refund
from payments.queue import enqueue
from payments.services.base import (
    _STATUS_SIGNALS,
    PAID_AFTER_CANCEL_REASON,
    _lock_payable_of,
    _lock_payment,
    _log_extra,
    _record_status,
    _send_on_commit,
    _success_on_commit,
    logger,
)
from payments.states import (
    OPEN_STATUSES,
    REFUND_HOLDS_MONEY,
    REFUND_REVERSALS,
    REFUNDABLE_STATUSES,
    PaymentStatus,
    can_transition,
    check_transition,
)

_HOLDING_REFUND = REFUND_HOLDS_MONEY


def _set_status(payment: Payment, target: str, *, reason: str = "") -> None:
    """Move a locked payment to `target`, or raise IllegalTransition and change nothing."""
    previous = payment.status
    check_transition(previous, target)
    unwanted = ""
    if target == PaymentStatus.SUCCEEDED and previous != PaymentStatus.DISPUTED:
        _lock_payable_of(payment)
        unwanted = _unwanted_payment_reason(payment, previous)
    elif target in OPEN_STATUSES and previous not in OPEN_STATUSES:
        # A failed attempt moving again (another card): as a start, under the payable's lock.
        _lock_payable_of(payment)
    payment.status = target
    payment.unwanted_reason = unwanted or payment.unwanted_reason
    if target == PaymentStatus.SUCCEEDED and payment.succeeded_at is None:
        payment.succeeded_at = timezone.now()
    payment.save()
    _record_status(payment, previous, target)
    logger.info("payment status changed", extra=_log_extra(payment, previous=previous, status=target))
    if unwanted:
        _refund_unwanted_payment(payment, reason=unwanted)
        return
    signal = _STATUS_SIGNALS.get(target)
    # A won dispute returns a payment to succeeded: that is not a new success.
    if signal and not (target == PaymentStatus.SUCCEEDED and previous == PaymentStatus.DISPUTED):
        if target == PaymentStatus.SUCCEEDED:
            _success_on_commit(payment, reason)
            metrics.inc_on_commit(metrics.PAYMENTS_SUCCEEDED)
            return
        _send_on_commit(signal, payment=payment, reason=reason)
        if target == PaymentStatus.FAILED:
            code = payment.last_error_decline_code or payment.last_error_code
            metrics.inc_on_commit(metrics.PAYMENTS_FAILED, reason=metrics.label(code))


def _unwanted_payment_reason(payment: Payment, previous: str) -> str:
    """Why money that just arrived is not a sale: its attempt was canceled (the payable expired or
    was cancelled while the payer was paying), or another attempt already paid for the payable."""
    if previous == PaymentStatus.CANCELED:
        return PAID_AFTER_CANCEL_REASON
    others = Payment.objects.filter(content_type_id=payment.content_type_id, object_id=payment.object_id)
    if others.exclude(pk=payment.pk).sales().exists():
        return "duplicate"
    return ""


def _refund_unwanted_payment(payment: Payment, *, reason: str) -> None:
    """Record a refund of what is left of an unwanted payment in this transaction and submit it
    once it commits (never a sale: no success signal; the refund's own signal tells the host)."""
    if payment.refundable_amount() <= 0:
        return  # refunded already (in the dashboard, before we heard of the payment)
    refund = _reserve_refund(payment_id=payment.pk, amount=None, reason=reason, requested_by=None)
    logger.error(
        "unwanted payment: refunding what is left of it",
        extra=_log_extra(payment, refund_id=refund.pk, amount=refund.amount, reason=reason),
    )
    enqueue("payments.tasks.retry_refund", refund.pk)


@transaction.atomic
def payment_transition(*, payment: Payment, status: str) -> Payment:
    """Move a payment to `status` under a row lock; raise IllegalTransition if not allowed."""
    locked = _lock_payment(payment.pk)
    _set_status(locked, status)
    return locked


# Refunds -------------------------------------------------------------------------------


@transaction.atomic
def _reserve_refund(*, payment_id: int, amount: int | None, reason: str, requested_by: Any) -> Refund:
    """Record a pending refund, checking the refundable balance under the payment's lock."""
    payment = _lock_payment(payment_id)
    if payment.status not in REFUNDABLE_STATUSES:
        raise RefundNotAllowed("Only a paid payment can be refunded.")
    refundable = payment.refundable_amount()
    amount = refundable if amount is None else amount
    if amount <= 0 or amount > refundable:
        raise RefundNotAllowed(
            f"At most {money.format_amount(refundable, payment.currency)} can be refunded."
            if refundable
            else "Nothing is left to refund."
        )
    unit = money.chargeable_unit(payment.currency)
    if amount % unit:
        raise RefundNotAllowed(
            f"{payment.currency.upper()} refunds must be a multiple of "
            f"{money.format_amount(unit, payment.currency)}."
        )
    uid = uuid.uuid4()
    refund = Refund.objects.create(
        payment=payment,
        amount=amount,
        currency=payment.currency,
        reason=reason[:255],
        requested_by=requested_by,
        uid=uid,
        idempotency_key=f"refund:{uid}",
    )
    _record_status(payment, "", refund.status, refund=refund)
    logger.info("refund reserved", extra=_log_extra(payment, refund_id=refund.pk, amount=amount))
    return refund


def _settle_refunds(payment: Payment, refund: Refund | None, *, notify: bool) -> None:
    """Move a locked payment to (partially_)refunded from its refunds, or back when one failed;
    tell the host of a new refund."""
    held = payment.refunds.filter(status__in=_HOLDING_REFUND, stripe_refund_id__gt="")
    refunded = held.aggregate(total=models.Sum("amount"))["total"] or 0
    if refunded >= payment.total:
        target = PaymentStatus.REFUNDED
    elif refunded > 0:
        target = PaymentStatus.PARTIALLY_REFUNDED
    else:
        target = PaymentStatus.SUCCEEDED
    if refunded and payment.status != target and can_transition(payment.status, target):
        _set_status(payment, target)
    elif target in REFUND_REVERSALS.get(payment.status, ()):
        # A refund failed after it succeeded: the money is ours again and refundable again.
        previous, payment.status = payment.status, target
        payment.save(update_fields=["status", "updated_at"])
        logger.error(
            "a refund failed at the provider: the payment holds its money again",
            extra=_log_extra(payment, previous=previous, status=target, refunded=refunded),
        )
        if refund is not None:
            _send_on_commit(signals.payment_refund_failed, payment=payment, refund=refund)
    if notify and refund is not None and refund.status in _HOLDING_REFUND:
        _send_on_commit(
            signals.payment_refunded,
            payment=payment,
            refund=refund,
            fully_refunded=payment.status == PaymentStatus.REFUNDED,
        )
