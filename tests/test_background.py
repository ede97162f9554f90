"""Background work: emails sent exactly once, retries that back off, tasks only after commit, expiry."""

import json
import time

import pytest
from celery.signals import before_task_publish
from django.core import mail
from django.db import transaction
from django.test import Client

from bookings.models import Booking, EmailLog
from bookings.services import booking_pay
from bookings.tasks import expire_booking_holds, send_booking_email
from payments.models import Payment
from payments.queue import backoff, enqueue
from payments.states import PaymentStatus
from stripe_emulator.harness import make_event, sign_payload, stripe_object
from tests.conftest import wait_for
from tests.email_backends import FlakySMTPBackend, WorkerDied
from tests.factories import BookingFactory, EventFactory, PaymentFactory, UserFactory


class Published:
    """Records every task published to the broker, with its countdown."""

    def __init__(self):
        self.tasks = []

    def __enter__(self):
        before_task_publish.connect(self._record, weak=False)
        return self

    def __exit__(self, *exc):
        before_task_publish.disconnect(self._record)

    def _record(self, sender=None, headers=None, body=None, **kwargs):
        from datetime import datetime

        eta = headers.get("eta")
        countdown = (datetime.fromisoformat(eta).timestamp() - time.time()) if eta else 0.0
        self.tasks.append((sender, list(body[0]), countdown))


def _paid_booking_payment():
    host = UserFactory(username="host-anna", email="anna@example.com")
    booker = UserFactory(username="booker-bob", email="bob@example.com")
    booking = BookingFactory(user=booker, event=EventFactory(title="Jazz Night", host=host), quantity=2)
    return PaymentFactory(payable=booking, stripe_payment_intent_id="pi_e2e_email", status="created")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_webhook_to_two_emails_through_a_real_worker(celery_worker_thread, mailoutbox):
    payment = _paid_booking_payment()
    intent = stripe_object(
        "payment_intent",
        id=payment.stripe_payment_intent_id,
        amount=payment.total,
        currency="usd",
        status="succeeded",
        metadata={"payment_id": str(payment.pk)},
    )
    payload = json.dumps(make_event("payment_intent.succeeded", intent)).encode()
    response = Client().post(
        "/api/webhooks/stripe/",
        data=payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign_payload(payload, "whsec_test_primary"),
    )
    assert response.status_code == 200
    wait_for(lambda: len(mail.outbox) >= 2, message="two emails")
    time.sleep(0.5)  # nothing more should arrive
    assert len(mail.outbox) == 2
    by_recipient = {m.to[0]: m for m in mail.outbox}
    booker, host = by_recipient["bob@example.com"], by_recipient["anna@example.com"]
    assert booker.subject == "Booking confirmed: Jazz Night"
    assert "40.00 USD" in booker.body and "1.20 USD" in booker.body and "41.20 USD" in booker.body
    assert booker.alternatives and "41.20 USD" in booker.alternatives[0][0]
    assert host.subject == "New booking for Jazz Night"
    assert "booker-bob" in host.body and "2 seats" in host.body
    assert Booking.objects.get(pk=payment.object_id).status == "confirmed"
    assert set(EmailLog.objects.values_list("kind", "status")) == {
        ("confirmed", "sent"),
        ("host_confirmed", "sent"),
    }


@pytest.mark.django_db
def test_email_task_twice_sends_once(mailoutbox):
    booking = _paid_booking_payment().payable
    send_booking_email.apply(args=[booking.pk, "confirmed"])
    send_booking_email.apply(args=[booking.pk, "confirmed"])
    send_booking_email.apply(args=[booking.pk, "host_confirmed"])
    assert sorted(m.to[0] for m in mailoutbox) == ["anna@example.com", "bob@example.com"]


@pytest.mark.django_db
def test_crash_between_send_and_commit_does_not_send_again(mailoutbox, settings):
    booking = _paid_booking_payment().payable
    settings.EMAIL_BACKEND = "tests.email_backends.SendThenCrashBackend"
    with pytest.raises(WorkerDied):
        send_booking_email.run(booking.pk, "confirmed")
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    send_booking_email.apply(args=[booking.pk, "confirmed"])  # the task is delivered again
    assert len(mailoutbox) == 1
    log = EmailLog.objects.get(booking=booking, kind="confirmed")
    assert log.status == "sending" and log.attempts == 1  # claimed: not sent again while it may be


@pytest.mark.django_db
def test_a_worker_killed_before_the_send_leaves_a_claim_that_expires_and_is_sent(
    mailoutbox, settings, django_capture_on_commit_callbacks
):
    """kill -9 between the claim and the SMTP server's answer: after the claim expires the sweep
    sends the email, once, with the Message-ID it always has."""
    from datetime import timedelta

    from django.utils import timezone

    from bookings.emails import emails_sweep

    booking = _paid_booking_payment().payable
    EmailLog.objects.update_or_create(
        booking=booking, kind="confirmed", defaults={"status": "sending", "attempts": 1, "recipient": "x@y.z"}
    )
    with django_capture_on_commit_callbacks(execute=False) as queued:
        emails_sweep(older_than=timedelta(minutes=7))
    assert queued == []  # a fresh claim: the send may still be under way
    send_booking_email.apply(args=[booking.pk, "confirmed"])
    assert mailoutbox == []

    expired = timezone.now() - settings.BOOKINGS.get("EMAIL_CLAIM_EXPIRES_AFTER", timedelta(minutes=5))
    EmailLog.objects.filter(booking=booking).update(updated_at=expired - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=False) as queued:
        assert emails_sweep(older_than=timedelta(minutes=7)) >= 1
    send_booking_email.apply(args=[booking.pk, "confirmed"])
    assert [m.extra_headers["Message-ID"] for m in mailoutbox] == [
        f"<booking-{booking.pk}-confirmed@bookings.local>"
    ]
    log = EmailLog.objects.get(booking=booking, kind="confirmed")
    assert (log.status, log.attempts) == ("sent", 2)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_smtp_failing_four_times_then_sent_once(celery_worker_thread, mailoutbox, settings):
    booking = _paid_booking_payment().payable
    settings.EMAIL_BACKEND = "tests.email_backends.FlakySMTPBackend"
    settings.BOOKINGS = {**settings.BOOKINGS, "EMAIL_RETRY_DELAY": 0.2}
    FlakySMTPBackend.attempts = []
    with Published() as published:
        send_booking_email.delay(booking.pk, "confirmed")
        wait_for(lambda: len(mail.outbox) == 1, timeout=20, message="the email after four SMTP failures")
    assert len(FlakySMTPBackend.attempts) == 5
    log = EmailLog.objects.get(booking=booking, kind="confirmed")
    assert (log.status, log.attempts) == ("sent", 5)
    retries = [
        countdown for name, _, countdown in published.tasks if name == "bookings.tasks.send_booking_email"
    ][1:]
    assert len(retries) == 4
    assert retries == sorted(retries) and retries[-1] > 2 * retries[0]
    gaps = [b - a for a, b in zip(FlakySMTPBackend.attempts, FlakySMTPBackend.attempts[1:], strict=False)]
    assert gaps[-1] > gaps[0]


@pytest.mark.django_db
def test_email_gives_up_after_the_last_attempt(mailoutbox, settings):
    booking = _paid_booking_payment().payable
    settings.EMAIL_BACKEND = "tests.email_backends.FlakySMTPBackend"
    settings.BOOKINGS = {**settings.BOOKINGS, "EMAIL_MAX_ATTEMPTS": 1}
    FlakySMTPBackend.attempts = []
    assert send_booking_email.apply(args=[booking.pk, "confirmed"]).get() == "failed"
    log = EmailLog.objects.get(booking=booking, kind="confirmed")
    assert log.status == "failed" and "SMTPServerDisconnected" in log.last_error


@pytest.mark.django_db(transaction=True)
def test_rolled_back_transaction_enqueues_nothing():
    booking = _paid_booking_payment().payable
    with Published() as published:
        with pytest.raises(RuntimeError), transaction.atomic():
            enqueue(send_booking_email, booking.pk, "confirmed")
            raise RuntimeError("rolled back")
        assert published.tasks == []
        with transaction.atomic():
            enqueue(send_booking_email, booking.pk, "confirmed")
            assert published.tasks == []  # not before the commit
        assert [name for name, _, _ in published.tasks] == ["bookings.tasks.send_booking_email"]


def test_every_retry_delay_stays_below_the_visibility_timeout(settings):
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    assert visibility > settings.PAYMENTS["MAX_RETRY_COUNTDOWN"]
    assert visibility > settings.CELERY_TASK_TIME_LIMIT
    worst = [
        backoff(attempt, base=base)
        for attempt in range(1, 30)
        for base in (5.0, settings.BOOKINGS.get("EMAIL_RETRY_DELAY", 30.0), 30.0)
    ]
    assert max(worst) <= settings.PAYMENTS["MAX_RETRY_COUNTDOWN"]


@pytest.mark.emulator
@pytest.mark.django_db
def test_expired_hold_releases_seats_and_cancels_the_intent(stripe_env):
    event = EventFactory(capacity=2)
    booking = BookingFactory(event=event, quantity=2)
    started = booking_pay(booking_id=booking.pk)
    assert event.seats_left() == 0
    Booking.objects.filter(pk=booking.pk).update(expires_at=booking.created_at)
    assert expire_booking_holds.apply().get() == {"expired": 1, "skipped": 0, "confirmed": 0}
    assert Booking.objects.get(pk=booking.pk).status == "expired"
    assert event.seats_left() == 2
    assert stripe_env.api("GET", f"/v1/payment_intents/{started.intent.id}")["status"] == "canceled"
    assert Payment.objects.get(pk=started.payment.pk).status == PaymentStatus.CANCELED


@pytest.mark.emulator
@pytest.mark.django_db
def test_a_paid_hold_is_confirmed_not_expired(stripe_env):
    """The payment committed but its success signal never ran (the worker died in between): the
    sweep confirms the booking, with its emails, and never releases paid seats."""
    booking = BookingFactory()
    booking_pay(booking_id=booking.pk, payment_method_id=stripe_env.card(), confirm=True)
    Booking.objects.filter(pk=booking.pk).update(status="pending", expires_at=booking.created_at)
    EmailLog.objects.filter(booking=booking).delete()
    assert expire_booking_holds.apply().get() == {"expired": 0, "skipped": 0, "confirmed": 1}
    assert Booking.objects.get(pk=booking.pk).status == "confirmed"
    assert sorted(EmailLog.objects.filter(booking=booking).values_list("kind", flat=True)) == [
        "confirmed", "host_confirmed",
    ]  # fmt: skip


@pytest.mark.emulator
@pytest.mark.django_db
def test_a_paid_hold_whose_seats_were_resold_is_refunded_by_the_sweep(
    stripe_env, django_capture_on_commit_callbacks
):
    """The payment committed, its signal was lost, the hold ran out and the seat was sold again:
    the sweep never oversells; it releases the booking (no "not paid" email) and refunds."""
    event = EventFactory(capacity=1)
    late = BookingFactory(event=event)
    started = booking_pay(booking_id=late.pk, payment_method_id=stripe_env.card(), confirm=True)
    Booking.objects.filter(pk=late.pk).update(status="pending", expires_at=late.created_at, confirmed_at=None)
    EmailLog.objects.filter(booking=late).delete()
    BookingFactory(event=event, status="confirmed")  # the seat went to someone else
    with Published() as published, django_capture_on_commit_callbacks(execute=True):
        assert expire_booking_holds.apply().get() == {"expired": 1, "skipped": 0, "confirmed": 0}
    assert Booking.objects.get(pk=late.pk).status == "expired"
    assert ("bookings.tasks.refund_unseated_payment", [started.payment.pk]) in [
        (n, a) for n, a, _ in published.tasks
    ]
    assert not EmailLog.objects.filter(booking=late).exists()
    assert event.seats_left() == 0
    # The next run finds nothing to do for it.
    assert expire_booking_holds.apply().get() == {"expired": 0, "skipped": 0, "confirmed": 0}


@pytest.mark.emulator
@pytest.mark.django_db
def test_payment_after_the_seats_were_sold_is_refunded(stripe_env, django_capture_on_commit_callbacks):
    from bookings.tasks import refund_unseated_payment
    from payments.services import payment_sync_intent

    event = EventFactory(capacity=1)
    late = BookingFactory(event=event)
    started = booking_pay(booking_id=late.pk, payment_method_id=stripe_env.card())
    Booking.objects.filter(pk=late.pk).update(status="expired", expires_at=late.created_at)
    BookingFactory(event=event, status="confirmed")  # the seat went to someone else
    stripe_env.api("POST", f"/v1/payment_intents/{started.intent.id}/confirm")  # the payer finished anyway
    with Published() as published, django_capture_on_commit_callbacks(execute=True):
        from payments.gateway import get_gateway

        payment_sync_intent(intent=get_gateway().retrieve_intent(started.intent.id))
    assert ("bookings.tasks.refund_unseated_payment", [started.payment.pk]) in [
        (n, a) for n, a, _ in published.tasks
    ]
    assert refund_unseated_payment.apply(args=[started.payment.pk]).get() == "succeeded"
    assert refund_unseated_payment.apply(args=[started.payment.pk]).get() == "nothing to refund"
    assert Payment.objects.get(pk=started.payment.pk).status == PaymentStatus.REFUNDED
    assert Booking.objects.get(pk=late.pk).status == "expired"
    assert len(stripe_env.api("GET", "/v1/refunds")["data"]) == 1


@pytest.mark.django_db
def test_an_email_row_is_addressed_as_its_email_is():
    from bookings.emails import compose, recipient_of

    payment = _paid_booking_payment()
    booking = payment.payable
    refund = payment.refunds.create(amount=100, currency="usd", status="succeeded", idempotency_key="r-1")
    for kind in ("confirmed", "host_confirmed", f"refund:{refund.pk}", f"payment_failed:{payment.pk}"):
        assert recipient_of(booking, kind) == compose(booking, kind).recipient, kind
