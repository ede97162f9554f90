"""Booking emails: who gets which, rendered from templates, and sent once per kind.

Sending is in two steps: the log row is claimed (`sending`) and committed, the message is sent,
then the row is marked `sent`. A task delivered twice finds the claim and sends nothing. A send
that fails with an SMTP or network error is known not to have gone out, so the row goes back to
`pending` and the task retries it. A claim whose worker died (killed between the claim and the
SMTP server's answer) expires after EMAIL_CLAIM_EXPIRES_AFTER, longer than any send may take,
and the sweep sends it again: an email is never lost. Should the worker have died after the
server took the message, the second copy carries the same Message-ID, which mail systems fold.
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.utils import timezone

from bookings.conf import booking_setting
from bookings.models import Booking, EmailLog
from payments import money
from payments import selectors as payment_selectors
from payments.models import Payment
from payments.queue import enqueue

logger = logging.getLogger(__name__)

# Failures that mean "the message did not go out": safe to try again.
TRANSIENT_ERRORS = (smtplib.SMTPException, OSError)


class EmailNotSent(Exception):
    """The SMTP server could not be reached or refused the message; retrying may help."""


@dataclass(frozen=True)
class Email:
    recipient: str
    subject: str
    template: str
    context: dict


def _amount(minor: int, currency: str) -> str:
    return money.format_amount(minor, currency)


def _latest_payment(booking: Booking) -> Payment | None:
    return payment_selectors.latest_payment(booking)


def compose(booking: Booking, kind: str) -> Email:
    """The email of `kind` for `booking`.

    Kinds: confirmed, host_confirmed, refund:<refund id>, payment_failed:<payment id>.
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
    if kind == "confirmed" or kind.startswith(("refund:", "payment_failed:")):
        return booking.user.email
    raise ValueError(f"Unknown email kind {kind!r}")


def email_queue(*, booking: Booking, kind: str) -> None:
    """Record that the booking's email of `kind` must go out (a pending log row, in the caller's
    transaction) and enqueue its sending once that commits. The row is what counts: should the
    enqueue be lost (Redis down, a crash), the sweep sends what is still pending."""
    from bookings.tasks import send_booking_email

    recipient = recipient_of(booking, kind)
    status = EmailLog.Status.PENDING if recipient else EmailLog.Status.FAILED
    log, _created = EmailLog.objects.get_or_create(
        booking=booking, kind=kind, defaults={"recipient": recipient or "", "status": status}
    )
    if log.status == EmailLog.Status.PENDING:
        enqueue(send_booking_email, booking.pk, kind)


def emails_sweep(*, older_than: timedelta) -> int:
    """Enqueue again the emails still pending after `older_than` (their task was lost) and those
    whose claim expired (their worker died while sending); returns how many. A task delivered
    twice sends once: a row is claimed before its email goes out."""
    from bookings.tasks import send_booking_email

    now = timezone.now()
    lost = Q(status=EmailLog.Status.PENDING, updated_at__lt=now - older_than)
    abandoned = Q(
        status=EmailLog.Status.SENDING, updated_at__lt=now - booking_setting("EMAIL_CLAIM_EXPIRES_AFTER")
    )
    stale = EmailLog.objects.filter(
        lost | abandoned, attempts__lt=booking_setting("EMAIL_MAX_ATTEMPTS")
    ).values_list("booking_id", "kind")[:500]
    for booking_id, kind in stale:
        enqueue(send_booking_email, booking_id, kind)
    return len(stale)


def _claim(booking_id: int, kind: str, recipient: str) -> EmailLog | None:
    """Mark the log row `sending` (creating it), or None when it was sent or is being sent (a claim
    younger than EMAIL_CLAIM_EXPIRES_AFTER)."""
    with transaction.atomic():
        log, _ = EmailLog.objects.get_or_create(
            booking_id=booking_id, kind=kind, defaults={"recipient": recipient}
        )
        log = EmailLog.objects.select_for_update().get(pk=log.pk)
        expired = log.updated_at < timezone.now() - booking_setting("EMAIL_CLAIM_EXPIRES_AFTER")
        if log.status == EmailLog.Status.SENT or (log.status == EmailLog.Status.SENDING and not expired):
            return None
        log.status = EmailLog.Status.SENDING
        log.attempts += 1
        log.recipient = recipient
        log.save()
        return log


def email_send(*, booking_id: int, kind: str) -> EmailLog:
    """Send the booking's email of `kind` once; raises EmailNotSent when a retry may help."""
    booking = Booking.objects.select_related("event", "event__host", "user").get(pk=booking_id)
    email = compose(booking, kind)
    if not email.recipient:
        logger.warning("no address for booking email", extra={"booking_id": booking_id, "kind": kind})
        log, _ = EmailLog.objects.get_or_create(booking=booking, kind=kind, defaults={"status": "failed"})
        return log
    log = _claim(booking_id, kind, email.recipient)
    if log is None:
        return EmailLog.objects.get(booking_id=booking_id, kind=kind)
    message = EmailMultiAlternatives(
        subject=email.subject,
        body=render_to_string(f"{email.template}.txt", email.context),
        to=[email.recipient],
        # A stable Message-ID lets mail systems fold a duplicate, should one ever get out.
        headers={"Message-ID": f"<booking-{booking.pk}-{kind.replace(':', '-')}@bookings.local>"},
    )
    message.attach_alternative(render_to_string(f"{email.template}.html", email.context), "text/html")
    try:
        message.send()
    except TRANSIENT_ERRORS as exc:
        EmailLog.objects.filter(pk=log.pk).update(
            status=EmailLog.Status.PENDING,
            last_error=f"{type(exc).__name__}: {exc}"[:2000],
            updated_at=timezone.now(),
        )
        logger.warning(
            "email not sent", extra={"booking_id": booking_id, "kind": kind, "attempts": log.attempts}
        )
        raise EmailNotSent(f"{type(exc).__name__}: {exc}") from exc
    EmailLog.objects.filter(pk=log.pk).update(
        status=EmailLog.Status.SENT, sent_at=timezone.now(), last_error="", updated_at=timezone.now()
    )
    logger.info("email sent", extra={"booking_id": booking_id, "kind": kind})
    return EmailLog.objects.get(pk=log.pk)


def email_give_up(*, booking_id: int, kind: str, error: str) -> None:
    """After the last attempt: keep the row as failed for staff to see."""
    EmailLog.objects.filter(booking_id=booking_id, kind=kind).update(
        status=EmailLog.Status.FAILED, last_error=error[:2000], updated_at=timezone.now()
    )
    logger.error("email failed for good", extra={"booking_id": booking_id, "kind": kind})
