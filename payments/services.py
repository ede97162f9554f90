"""Payment services: the only code that writes payment state. Atomic and row-locked."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from payments import signals
from payments.models import Payment
from payments.states import PaymentStatus, check_transition

logger = logging.getLogger(__name__)

_STATUS_SIGNALS = {
    PaymentStatus.SUCCEEDED: signals.payment_succeeded,
    PaymentStatus.FAILED: signals.payment_failed,
    PaymentStatus.CANCELED: signals.payment_canceled,
}


def _send_on_commit(signal, **kwargs) -> None:
    transaction.on_commit(lambda: signal.send(sender=Payment, **kwargs))


def _lock_payment(payment_id: int) -> Payment:
    return Payment.objects.select_for_update(of=("self",)).get(pk=payment_id)


def _set_status(payment: Payment, target: str) -> None:
    """Move a locked payment to `target`, or raise IllegalTransition and change nothing."""
    previous = payment.status
    check_transition(previous, target)
    payment.status = target
    if target == PaymentStatus.SUCCEEDED and payment.succeeded_at is None:
        payment.succeeded_at = timezone.now()
    payment.save(update_fields=["status", "succeeded_at", "updated_at"])
    logger.info(
        "payment status changed",
        extra={
            "payment_id": payment.pk,
            "from": previous,
            "to": target,
            "payable": payment.payable_reference,
        },
    )
    signal = _STATUS_SIGNALS.get(target)
    # A disputed payment that is won goes back to succeeded: that is not a new success.
    if signal and not (target == PaymentStatus.SUCCEEDED and previous == PaymentStatus.DISPUTED):
        _send_on_commit(signal, payment=payment)


@transaction.atomic
def payment_transition(*, payment: Payment, status: str) -> Payment:
    """Move a payment to `status` under a row lock; raise IllegalTransition if not allowed."""
    locked = _lock_payment(payment.pk)
    _set_status(locked, status)
    return locked
