"""Celery tasks of the booking site: emails and the expiry of unpaid holds."""

from __future__ import annotations

from celery import shared_task

from bookings.conf import booking_setting
from payments.queue import backoff, enqueue


@shared_task(bind=True, acks_late=True, max_retries=None)
def send_booking_email(self, booking_id: int, kind: str) -> str:
    """Send one booking email once; SMTP failures retry with growing, jittered delays."""
    from bookings import emails

    try:
        return emails.email_send(booking_id=booking_id, kind=kind).status
    except emails.EmailNotSent as exc:
        # The row's count: a try made by a batch task (send_booking_emails) counts too.
        attempt = exc.attempts or self.request.retries + 1
        if attempt >= booking_setting("EMAIL_MAX_ATTEMPTS"):
            emails.email_give_up(booking_id=booking_id, kind=kind, error=str(exc))
            return "failed"
        raise self.retry(countdown=backoff(attempt, base=booking_setting("EMAIL_RETRY_DELAY"))) from None


@shared_task(acks_late=True)
def sweep_pending_emails() -> int:
    """Send the booking emails whose task was lost (scheduled by beat every minute)."""
    from bookings import emails

    return emails.emails_sweep(older_than=booking_setting("EMAIL_SWEEP_AFTER"))


@shared_task(acks_late=True)
def send_booking_emails(items: list[list]) -> int:
    """Send several booking emails recorded together (a batch of confirmations); one that fails
    is retried on its own by send_booking_email, with backoff."""
    from bookings import emails

    def retry(booking_id: int, kind: str) -> None:
        enqueue(
            send_booking_email,
            booking_id,
            kind,
            countdown=backoff(1, base=booking_setting("EMAIL_RETRY_DELAY")),
        )

    return emails.emails_send(items=items, retry=retry)


@shared_task(acks_late=True)
def expire_booking_holds() -> dict:
    """Release the seats of unpaid bookings whose hold ran out (scheduled by beat every minute)."""
    from bookings import services

    return services.booking_expire_due()


@shared_task(acks_late=True)
def refund_unseated_payment(payment_id: int) -> str:
    """Refund in full a payment whose booking could not be confirmed (the seats were sold)."""
    from payments.exceptions import RefundNotAllowed
    from payments.models import Payment
    from payments.services import refund_create

    try:
        refund = refund_create(payment=Payment.objects.get(pk=payment_id), reason="requested_by_customer")
    except RefundNotAllowed:
        return "nothing to refund"  # already refunded: the task ran before
    return refund.status
