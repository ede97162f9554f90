"""Booking emails: who gets which, rendered from templates, and sent once per kind through the
site's outbox (config.outbox: a log row written with the change, a Celery task, a sweep)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from bookings.conf import booking_setting
from bookings.models import Booking, EmailLog
from config.outbox import Email, EmailNotSent, Outbox
from payments import money
from payments import selectors as payment_selectors
from payments.models import Payment

__all__ = [
    "Email",
    "EmailNotSent",
    "compose",
    "email_give_up",
    "email_queue",
    "email_send",
    "emails_queue",
    "emails_send",
    "emails_sweep",
]


def _amount(minor: int, currency: str) -> str:
    return money.format_amount(minor, currency)


def _latest_payment(booking: Booking) -> Payment | None:
    return payment_selectors.latest_payment(booking)


def compose(booking: Booking, kind: str) -> Email:
    """The email of `kind` for `booking`.

    Kinds: confirmed, host_confirmed, refund:<refund id>, unpaid (the hold ended after a failed
    payment), payment_failed:<payment id> (no longer queued; kept for rows queued before).
    """
    site = settings.SITE_URL.rstrip("/")
    payment = _latest_payment(booking)
    context = {
        "booking": booking,
        "event": booking.event,
        "payment": payment,
        "site": site,
        "subtotal": _amount(booking.subtotal, booking.currency),
        "fee": _amount(booking.fee, booking.currency),
        "total": _amount(booking.total, booking.currency),
        "bookings_url": f"{site}/my-bookings/",
    }
    if kind == "confirmed":
        return Email(
            booking.user.email,
            f"Booking confirmed: {booking.event.title}",
            "emails/booking_confirmed",
            context,
        )
    if kind == "host_confirmed":
        return Email(
            booking.event.host.email,
            f"New booking for {booking.event.title}",
            "emails/host_booking_confirmed",
            context,
        )
    if kind.startswith("refund:"):
        refund = payment_selectors.refund_of(booking, int(kind.split(":", 1)[1]))
        context["refund_amount"] = _amount(refund.amount, refund.currency)
        return Email(booking.user.email, f"Refund for {booking.event.title}", "emails/refund", context)
    if kind == "unpaid":
        failed = (
            payment_selectors.payments_of(booking).exclude(last_error_code="").order_by("-attempt").first()
        )
        context.update(payment=failed, event_url=f"{site}/events/{booking.event_id}/")
        return Email(
            booking.user.email,
            f"Your booking for {booking.event.title} was not paid",
            "emails/booking_unpaid",
            context,
        )
    if kind.startswith("payment_failed:"):
        failed = payment_selectors.payment_of(booking, int(kind.split(":", 1)[1]))
        context.update(payment=failed, retry_url=f"{site}/bookings/{booking.pk}/pay/")
        return Email(
            booking.user.email,
            f"Your payment for {booking.event.title} did not go through",
            "emails/payment_failed",
            context,
        )
    raise ValueError(f"Unknown email kind {kind!r}")


def recipient_of(booking: Booking, kind: str) -> str:
    """The address the booking's email of `kind` goes to (what compose() would address)."""
    if kind == "host_confirmed":
        return booking.event.host.email
    if kind in ("confirmed", "unpaid") or kind.startswith(("refund:", "payment_failed:")):
        return booking.user.email
    raise ValueError(f"Unknown email kind {kind!r}")


def _load(booking_id: int) -> Booking:
    return Booking.objects.select_related("event", "event__host", "user").get(pk=booking_id)


OUTBOX = Outbox(
    log=EmailLog,
    owner="booking",
    task="bookings.tasks.send_booking_email",
    batch_task="bookings.tasks.send_booking_emails",
    load=_load,
    compose=compose,
    recipient_of=recipient_of,
    message_id=lambda booking_id, kind: f"<booking-{booking_id}-{kind.replace(':', '-')}@bookings.local>",
    claim_expires_after=lambda: booking_setting("EMAIL_CLAIM_EXPIRES_AFTER"),
    max_attempts=lambda: booking_setting("EMAIL_MAX_ATTEMPTS"),
)


def email_queue(*, booking: Booking, kind: str) -> None:
    """Record that the booking's email of `kind` must go out, in the caller's transaction."""
    OUTBOX.queue(booking, kind)


def emails_queue(items: list[tuple[Booking, str]]) -> None:
    """Record many (booking, kind) emails at once, in the caller's transaction."""
    OUTBOX.queue_many(items)


def emails_sweep(*, older_than: timedelta) -> int:
    """Enqueue again the booking emails whose task was lost or whose worker died; how many."""
    return OUTBOX.sweep(older_than=older_than)


def email_send(*, booking_id: int, kind: str) -> EmailLog:
    """Send the booking's email of `kind` once; raises EmailNotSent when a retry may help."""
    return OUTBOX.send(booking_id, kind)  # type: ignore[return-value]


def emails_send(*, items: list[list], retry) -> int:
    """Send several booking emails recorded together; `retry(booking_id, kind)` for one that failed."""
    return OUTBOX.send_many(items, retry=retry)


def email_give_up(*, booking_id: int, kind: str, error: str) -> None:
    OUTBOX.give_up(booking_id, kind, error=error)
