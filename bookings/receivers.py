"""Receivers that turn payment outcomes into booking changes."""

from __future__ import annotations

import logging

from django.dispatch import receiver

from bookings import services
from bookings.emails import email_queue
from bookings.exceptions import BookingError
from bookings.models import Booking
from bookings.tasks import refund_unseated_payment
from payments import selectors as payment_selectors
from payments.queue import enqueue
from payments.signals import (
    payment_canceled,
    payment_disputed,
    payment_refunded,
    payments_succeeded,
)

logger = logging.getLogger(__name__)


def _booking_id(payment) -> int | None:
    return payment_selectors.payable_id(payment, Booking)


@receiver(payments_succeeded, dispatch_uid="bookings.confirm_on_payments")
def confirm_on_payments(sender, payments, **kwargs) -> None:
    """Confirm the bookings paid for, all at once (a webhook drain sends its whole batch)."""
    paid_for = {
        booking_id: payment for payment in payments if (booking_id := _booking_id(payment)) is not None
    }
    if not paid_for:
        return
    try:
        refused = services.bookings_confirm(booking_ids=list(paid_for))
    except Exception:
        # One booking's failure must not leave the others of the batch unconfirmed: one at a time.
        logger.exception("bookings not confirmed together: one at a time", extra={"bookings": len(paid_for)})
        refused = {}
        for booking_id in paid_for:
            try:
                refused.update(services.bookings_confirm(booking_ids=[booking_id]))
            except Exception:
                logger.exception("paid booking not confirmed", extra={"booking_id": booking_id})
    for booking_id, error in refused.items():
        # Charged, but the booking cannot be confirmed (its seats were sold after the hold ran
        # out, or it was cancelled meanwhile): give the money back.
        logger.error(
            "paid booking cannot be confirmed: refunding",
            extra={"booking_id": booking_id, "error_code": error.code},
        )
        enqueue(refund_unseated_payment, paid_for[booking_id].pk)


@receiver(payment_refunded, dispatch_uid="bookings.cancel_on_full_refund")
def cancel_on_full_refund(sender, payment, refund=None, fully_refunded: bool = False, **kwargs) -> None:
    booking_id = _booking_id(payment)
    if booking_id is None:
        return
    # Money refunded because it was never the booking's payment (a duplicate, a late one) leaves
    # the booking as its real payment made it.
    if fully_refunded and not payment.unwanted_reason:
        services.booking_cancel(booking_id=booking_id)
    if refund is not None:
        email_queue(booking=Booking.objects.get(pk=booking_id), kind=f"refund:{refund.pk}")


@receiver(payment_canceled, dispatch_uid="bookings.release_on_expired_checkout")
def release_on_expired_checkout(sender, payment, reason: str = "", **kwargs) -> None:
    booking_id = _booking_id(payment)
    if booking_id is None or reason != "expired":
        return
    try:
        # Only once the booking's own hold is over: a session closed because the payer went
        # on to pay by card must not release the seats being paid for (a hosted page always
        # outlives the hold, so a page that ran out by itself finds the hold over).
        services.booking_expire(booking_id=booking_id)
    except BookingError:
        logger.info("checkout closed within the hold: booking kept", extra={"booking_id": booking_id})


@receiver(payment_disputed, dispatch_uid="bookings.flag_on_dispute")
def flag_on_dispute(sender, payment, **kwargs) -> None:
    booking_id = _booking_id(payment)
    if booking_id is not None:
        services.booking_flag_dispute(booking_id=booking_id)
