"""The webhook drain applies events in batches: plain successes together, everything else one by
one, with the same outcome as processing each event on its own; the bookings they pay for are
confirmed together and their emails sent in a few tasks."""

import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bookings.models import Booking, EmailLog
from bookings.services import bookings_confirm
from payments.gateway import get_gateway
from payments.models import Installation, Payment, PaymentEvent, Refund, WebhookEvent
from payments.services import payment_transition, successes_batched
from payments.signals import payments_succeeded
from payments.states import PaymentStatus
from payments.webhooks import webhook_event_process, webhook_event_store, webhook_events_drain
from stripe_emulator.harness import make_event, stripe_object
from tests.factories import BookingFactory, EventFactory, PaymentFactory
from tests.test_webhooks import Signals

pytestmark = pytest.mark.django_db


def _payment(booking=None, **kwargs):
    extra = {"payable": booking} if booking is not None else {}
    return PaymentFactory(stripe_payment_intent_id=f"pi_batch_{time.monotonic_ns()}", **extra, **kwargs)


def _succeeded(payment, *, amount=None, metadata=None):
    intent = stripe_object(
        "payment_intent",
        id=payment.stripe_payment_intent_id,
        amount=amount or payment.total,
        amount_received=amount or payment.total,
        currency=payment.currency,
        status="succeeded",
        metadata=metadata or {"payment_id": str(payment.pk)},
        latest_charge=f"ch_{payment.stripe_payment_intent_id}",
    )
    event = make_event("payment_intent.succeeded", intent)
    webhook_event_store(event=get_gateway().event_from_payload(event))
    return event


def _charge_succeeded(payment):
    charge = stripe_object(
        "charge",
        id=f"ch_{payment.stripe_payment_intent_id}",
        payment_intent=payment.stripe_payment_intent_id,
        amount=payment.total,
        currency=payment.currency,
        status="succeeded",
        paid=True,
        metadata={"payment_id": str(payment.pk)},
    )
    event = make_event("charge.succeeded", charge)
    webhook_event_store(event=get_gateway().event_from_payload(event))


def _ignored(payment):
    intent = stripe_object("payment_intent", id=payment.stripe_payment_intent_id, metadata={})
    webhook_event_store(event=get_gateway().event_from_payload(make_event("payment_intent.created", intent)))


def _scenario():
    """Every case a batch of payment_intent.succeeded can hold, by role: the payments, stored events."""
    roles = {}
    roles["plain"] = [_payment() for _ in range(3)]
    sold = BookingFactory()
    _payment(sold, status=PaymentStatus.SUCCEEDED)
    roles["duplicate"] = _payment(sold, attempt=2)  # its booking was paid by another attempt
    twice = BookingFactory()
    # A failed attempt and the next one, both paid (a card failed, then its intent went through).
    roles["first_of_two"] = _payment(twice, status=PaymentStatus.FAILED)
    roles["second_of_two"] = _payment(twice, attempt=2)
    roles["refund_first"] = _payment()
    roles["mismatch"] = _payment()
    roles["after_cancel"] = _payment(status=PaymentStatus.CANCELED)
    roles["foreign"] = _payment()
    # What Stripe sends for a card payment: created (nothing to do), the charge, the intent.
    roles["by_charge"] = _payment()
    roles["charge_and_intent"] = _payment()
    _ignored(roles["charge_and_intent"])
    _charge_succeeded(roles["by_charge"])
    _charge_succeeded(roles["charge_and_intent"])
    _succeeded(roles["charge_and_intent"])
    declined = roles["declined_then_paid"] = _payment()
    failed = stripe_object(
        "payment_intent", id=declined.stripe_payment_intent_id, status="requires_payment_method",
        amount=declined.total, currency="usd", metadata={"payment_id": str(declined.pk)},
        last_payment_error={"code": "card_declined", "decline_code": "generic_decline", "message": "No."},
    )  # fmt: skip
    # A refused card, then the intent paid with another: the failure ends a run, alone, in order.
    webhook_event_store(
        event=get_gateway().event_from_payload(make_event("payment_intent.payment_failed", failed))
    )
    _succeeded(roles["declined_then_paid"])
    for payment in [*roles["plain"], roles["duplicate"], roles["first_of_two"], roles["second_of_two"]]:
        _succeeded(payment)
    _succeeded(roles["plain"][0])  # the same intent's event delivered again under another id
    Refund.objects.create(
        payment=roles["refund_first"], amount=500, currency="usd", status="succeeded",
        stripe_refund_id=f"re_{roles['refund_first'].pk}", idempotency_key=f"dash-{roles['refund_first'].pk}",
    )  # fmt: skip
    _succeeded(roles["refund_first"])
    _succeeded(roles["mismatch"], amount=roles["mismatch"].total + 100)
    _succeeded(roles["after_cancel"])
    _succeeded(roles["foreign"], metadata={"installation": "another-installation"})
    event = make_event(
        "payment_intent.succeeded", stripe_object("payment_intent", id="pi_nobody", status="succeeded")
    )
    webhook_event_store(event=get_gateway().event_from_payload(event))
    return roles


def _outcome(roles):
    """What each role's payment, booking, refunds and timeline ended as, and the events' outcomes."""
    seen = {}
    for role, payments in roles.items():
        for i, payment in enumerate(payments if isinstance(payments, list) else [payments]):
            payment = Payment.objects.get(pk=payment.pk)
            seen[f"{role}{i}"] = (
                payment.status,
                payment.unwanted_reason,
                bool(payment.stripe_charge_id),
                payment.succeeded_at is not None,
                Booking.objects.get(pk=payment.object_id).status,
                sorted(payment.refunds.values_list("amount", "reason")),
                (payment.stripe_status, payment.card_brand, payment.card_last4),
                list(payment.events.order_by("pk").values_list("kind", "from_status", "to_status")),
            )
    events = sorted(WebhookEvent.objects.values_list("status", "attempts", "last_error"))
    return seen, events


@pytest.mark.django_db(transaction=True)
def test_a_batch_ends_as_processing_each_event_on_its_own(caplog):
    Installation.current_id()
    one_by_one_roles = _scenario()
    for pk in WebhookEvent.objects.order_by("pk").values_list("pk", flat=True):
        webhook_event_process(event_id=pk)
    expected = _outcome(one_by_one_roles)
    WebhookEvent.objects.all().delete()

    roles = _scenario()
    with Signals(payments_succeeded) as batches:
        done, more = webhook_events_drain()
    assert (len(done), more) == (WebhookEvent.objects.count(), False)
    # The plain successes went together (had they failed, one by one would hide it).
    assert "plain successes not applied together" not in caplog.text
    assert _outcome(roles) == expected
    seen, _events = expected
    assert {seen[f"plain{i}"][0] for i in range(3)} == {PaymentStatus.SUCCEEDED}
    assert {seen[f"plain{i}"][4] for i in range(3)} == {Booking.Status.CONFIRMED}
    assert seen["duplicate0"][1] == "duplicate" and seen["second_of_two0"][1] == "duplicate"
    assert seen["after_cancel0"][1] == "paid_after_cancel"
    assert seen["refund_first0"][0] == PaymentStatus.PARTIALLY_REFUNDED
    assert seen["mismatch0"][0] == PaymentStatus.CREATED and seen["foreign0"][0] == PaymentStatus.CREATED
    # payments_succeeded once per batch, with every success that is a sale (the failed attempt's
    # event is a batch of its own, between two runs).
    assert seen["by_charge0"][:3] == (PaymentStatus.SUCCEEDED, "", True)
    assert seen["charge_and_intent0"][0] == seen["declined_then_paid0"][0] == PaymentStatus.SUCCEEDED
    sales = [
        *roles["plain"], roles["first_of_two"], roles["refund_first"], roles["by_charge"],
        roles["charge_and_intent"], roles["declined_then_paid"],
    ]  # fmt: skip
    announced = [p.pk for batch in batches.received for p in batch["payments"]]
    assert sorted(announced) == sorted(p.pk for p in sales)
    assert len(batches.received) <= 3


@pytest.mark.django_db(transaction=True)
def test_events_are_applied_in_the_order_they_were_stored():
    """3-D Secure, then the success, for one intent: never the older state over the newer one."""
    payment, other = _payment(), _payment()
    intent = stripe_object(
        "payment_intent", id=payment.stripe_payment_intent_id, amount=payment.total, currency="usd",
        status="requires_action", metadata={"payment_id": str(payment.pk)},
    )  # fmt: skip
    webhook_event_store(
        event=get_gateway().event_from_payload(make_event("payment_intent.requires_action", intent))
    )
    _succeeded(payment)
    _succeeded(other)
    done, _more = webhook_events_drain()
    assert [row.type for row in done] == [
        "payment_intent.requires_action", "payment_intent.succeeded", "payment_intent.succeeded",
    ]  # fmt: skip
    payment.refresh_from_db()
    assert (payment.status, payment.stripe_status) == (PaymentStatus.SUCCEEDED, "succeeded")
    assert list(payment.events.order_by("pk").values_list("from_status", "to_status")) == [
        ("created", "requires_action"), ("requires_action", "succeeded"),
    ]  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_a_batch_costs_the_same_queries_for_ten_events_or_forty():
    def drain(count):
        for _ in range(count):
            _succeeded(_payment())
        with CaptureQueriesContext(connection) as queries:
            done, _more = webhook_events_drain()
        assert len(done) == count
        return len(queries)

    drain(2)  # the caches (content types, this installation's id) filled
    assert drain(10) == drain(40) <= 24
    assert set(Payment.objects.values_list("status", flat=True)) == {PaymentStatus.SUCCEEDED}
    assert set(Booking.objects.values_list("status", flat=True)) == {Booking.Status.CONFIRMED}
    assert EmailLog.objects.filter(status="pending").count() == 2 * 52
    entries = PaymentEvent.objects.filter(kind="status", to_status="succeeded")
    assert entries.count() == 52 and all(e.cause.startswith("webhook evt_") for e in entries)


def test_stripes_two_events_for_a_card_payment_cost_the_same_queries_for_five_payments_or_twenty():
    """charge.succeeded and payment_intent.succeeded for each payment: the second one of each pair
    goes with the batch, not one by one."""

    def drain(count):
        payments = [_payment() for _ in range(count)]
        for payment in payments:
            _charge_succeeded(payment)
            _succeeded(payment)
        with CaptureQueriesContext(connection) as queries:
            done, _more = webhook_events_drain()
        assert len(done) == 2 * count
        assert {Payment.objects.get(pk=p.pk).stripe_status for p in payments} == {"succeeded"}
        return len(queries)

    drain(2)
    assert drain(5) == drain(20) <= 24
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {WebhookEvent.Status.PROCESSED}
    assert PaymentEvent.objects.filter(kind="status", to_status="succeeded").count() == 27


@pytest.mark.django_db(transaction=True)
def test_a_batch_that_cannot_be_recorded_is_processed_one_event_at_a_time():
    """A refusal of the batch's record rolls all of it back; one by one, only the event at fault
    fails, the rest go through (the old test of this is in test_webhooks, with a refusing trigger)."""
    payments = [_payment() for _ in range(5)]
    for payment in payments:
        _succeeded(payment)
    stuck = WebhookEvent.objects.order_by("pk")[2]
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION refuse_batch() RETURNS trigger AS $$ BEGIN"
            " RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql"
        )
        cursor.execute(
            "CREATE TRIGGER refuse_batch BEFORE UPDATE ON payments_webhookevent FOR EACH ROW"
            f" WHEN (NEW.id = {stuck.pk} AND NEW.status = 'processed') EXECUTE FUNCTION refuse_batch()"
        )
    try:
        with Signals(payments_succeeded) as batches:
            done, _more = webhook_events_drain()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER refuse_batch ON payments_webhookevent")
            cursor.execute("DROP FUNCTION refuse_batch()")
    assert len(done) == 5
    statuses = dict(WebhookEvent.objects.values_list("pk", "status"))
    assert statuses.pop(stuck.pk) == "failed" and set(statuses.values()) == {"processed"}
    assert Payment.objects.filter(status=PaymentStatus.SUCCEEDED).count() == 4
    # Only committed successes are announced: four, one by one.
    assert sorted(len(b["payments"]) for b in batches.received) == [1, 1, 1, 1]


@pytest.mark.django_db(transaction=True)
def test_payments_succeeded_follows_each_commit_or_each_batch_and_skips_what_rolled_back():
    first, second, third = (_payment(status=PaymentStatus.PROCESSING) for _ in range(3))
    with Signals(payments_succeeded) as got, transaction.atomic():
        payment_transition(payment=first, status=PaymentStatus.SUCCEEDED)
        with pytest.raises(RuntimeError), transaction.atomic():
            payment_transition(payment=second, status=PaymentStatus.SUCCEEDED)
            raise RuntimeError("rolled back")
    assert [[p.pk for p in r["payments"]] for r in got.received] == [[first.pk]]
    with Signals(payments_succeeded) as got, successes_batched():
        payment_transition(payment=second, status=PaymentStatus.SUCCEEDED)
        payment_transition(payment=third, status=PaymentStatus.SUCCEEDED)
        assert got.received == []  # not before the block ends
    assert [[p.pk for p in r["payments"]] for r in got.received] == [[second.pk, third.pk]]


def test_bookings_are_confirmed_together_and_the_ones_that_cannot_be_are_named():
    full = EventFactory(capacity=2)
    pending = [BookingFactory() for _ in range(3)]
    confirmed = BookingFactory(status=Booking.Status.CONFIRMED)
    expired_free = BookingFactory(status=Booking.Status.EXPIRED)
    expired_sold = BookingFactory(event=full, quantity=2, status=Booking.Status.EXPIRED)
    BookingFactory(event=full, quantity=2, status=Booking.Status.CONFIRMED)  # took its seats
    cancelled = BookingFactory(status=Booking.Status.CANCELLED)
    ids = [b.pk for b in (*pending, confirmed, expired_free, expired_sold, cancelled)]
    refused = bookings_confirm(booking_ids=ids)
    assert sorted(refused) == sorted([expired_sold.pk, cancelled.pk])
    assert refused[expired_sold.pk].code == "sold_out"
    status = dict(Booking.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert [status[b.pk] for b in (*pending, confirmed, expired_free)] == [Booking.Status.CONFIRMED] * 5
    assert (status[expired_sold.pk], status[cancelled.pk]) == (
        Booking.Status.EXPIRED,
        Booking.Status.CANCELLED,
    )
    assert all(Booking.objects.get(pk=b.pk).confirmed_at for b in pending)
    assert EmailLog.objects.filter(booking__in=[*pending, expired_free]).count() == 8
    assert not EmailLog.objects.filter(booking=confirmed).exists()  # confirmed before: nothing new
    assert bookings_confirm(booking_ids=[b.pk for b in pending]) == {}  # again: nothing changes
    assert EmailLog.objects.count() == 8


def test_a_batch_of_emails_goes_in_one_task_and_a_failing_one_is_retried_on_its_own(
    settings, mailoutbox, django_capture_on_commit_callbacks, monkeypatch
):
    from bookings.tasks import send_booking_emails
    from tests.email_backends import FlakySMTPBackend
    from tests.test_background import Published

    bookings = [BookingFactory() for _ in range(3)]
    with Published() as published, django_capture_on_commit_callbacks(execute=True):
        bookings_confirm(booking_ids=[b.pk for b in bookings])
    [(name, [items], _countdown)] = [t for t in published.tasks if t[0].startswith("bookings.")]
    assert name == "bookings.tasks.send_booking_emails" and len(items) == 6
    settings.EMAIL_BACKEND = "tests.email_backends.FlakySMTPBackend"
    monkeypatch.setattr(FlakySMTPBackend, "attempts", [])
    monkeypatch.setattr(FlakySMTPBackend, "failures", 1)
    with Published() as published, django_capture_on_commit_callbacks(execute=True):
        assert send_booking_emails.apply(args=(items,)).get() == 5
    [(name, args, countdown)] = published.tasks
    assert (name, args) == ("bookings.tasks.send_booking_email", list(items[0])) and countdown > 0
    assert EmailLog.objects.filter(status="sent").count() == 5
    assert EmailLog.objects.get(booking_id=items[0][0], kind=items[0][1]).status == "pending"
    assert timezone.now() - EmailLog.objects.earliest("created_at").created_at < timedelta(minutes=1)


def _confirmed_while_smtp_fails(settings, monkeypatch, *, max_attempts: int):
    """A confirmed booking whose emails are recorded, with an SMTP server refusing every message."""
    from tests.email_backends import FlakySMTPBackend

    booking = BookingFactory()
    bookings_confirm(booking_ids=[booking.pk])
    settings.EMAIL_BACKEND = "tests.email_backends.FlakySMTPBackend"
    settings.BOOKINGS = {**settings.BOOKINGS, "EMAIL_MAX_ATTEMPTS": max_attempts}
    monkeypatch.setattr(FlakySMTPBackend, "attempts", [])
    monkeypatch.setattr(FlakySMTPBackend, "failures", 100)
    return booking


def test_an_email_a_batch_tried_gets_no_more_tries_than_the_limit_in_all(
    settings, monkeypatch, django_capture_on_commit_callbacks
):
    """The batch's try counts: its retry task gives up once EMAIL_MAX_ATTEMPTS tries are made."""
    from bookings.tasks import send_booking_email, send_booking_emails
    from tests.email_backends import FlakySMTPBackend
    from tests.test_background import Published

    booking = _confirmed_while_smtp_fails(settings, monkeypatch, max_attempts=3)
    with Published() as published, django_capture_on_commit_callbacks(execute=True):
        send_booking_emails.apply(args=([[booking.pk, "confirmed"]],)).get()
    assert [name for name, _, _ in published.tasks] == ["bookings.tasks.send_booking_email"]
    # The retry task, run eagerly: each of its retries runs at once, until it gives up.
    send_booking_email.apply(args=(booking.pk, "confirmed"))
    log = EmailLog.objects.get(booking=booking, kind="confirmed")
    assert (len(FlakySMTPBackend.attempts), log.attempts, log.status) == (3, 3, "failed")
    # A retry still queued when another task gave up (a duplicate, the sweep's) tries no more.
    assert send_booking_email.apply(args=(booking.pk, "confirmed")).get() == "failed"
    assert len(FlakySMTPBackend.attempts) == 3


def test_a_batch_gives_up_on_an_email_whose_last_try_it_made(
    settings, monkeypatch, django_capture_on_commit_callbacks
):
    from bookings.tasks import send_booking_emails
    from tests.email_backends import FlakySMTPBackend
    from tests.test_background import Published

    booking = _confirmed_while_smtp_fails(settings, monkeypatch, max_attempts=1)
    with Published() as published, django_capture_on_commit_callbacks(execute=True):
        assert send_booking_emails.apply(args=([[booking.pk, "confirmed"]],)).get() == 0
    assert published.tasks == []  # no retry: that was its one try
    log = EmailLog.objects.get(booking=booking, kind="confirmed")
    assert (len(FlakySMTPBackend.attempts), log.attempts, log.status) == (1, 1, "failed")


def test_a_charge_succeeded_never_clears_a_dispute_and_settles_refunds_recorded_first():
    """charge.succeeded one by one decides as payment_intent.succeeded does."""
    disputed = _payment(status=PaymentStatus.DISPUTED)
    refunded_first = _payment(status=PaymentStatus.PROCESSING)
    Refund.objects.create(
        payment=refunded_first, amount=500, currency="usd", status="succeeded",
        stripe_refund_id=f"re_{refunded_first.pk}", idempotency_key=f"dash-{refunded_first.pk}",
    )  # fmt: skip
    for payment in (disputed, refunded_first):
        _charge_succeeded(payment)
    for pk in WebhookEvent.objects.order_by("pk").values_list("pk", flat=True):
        assert webhook_event_process(event_id=pk).status == "processed"
    assert Payment.objects.get(pk=disputed.pk).status == PaymentStatus.DISPUTED
    assert Payment.objects.get(pk=refunded_first.pk).status == PaymentStatus.PARTIALLY_REFUNDED


@pytest.mark.emulator
def test_a_started_intent_with_a_card_shows_the_card(stripe_env):
    """The new intent is linked in one statement: with the card it was made with, as before."""
    from bookings.services import booking_pay

    started = booking_pay(booking_id=BookingFactory().pk, payment_method_id=stripe_env.card())
    payment = Payment.objects.get(pk=started.payment.pk)
    assert (payment.status, payment.stripe_payment_intent_id) == (PaymentStatus.CREATED, started.intent.id)
    assert (payment.card_brand, payment.card_last4) == ("visa", "4242")
    assert (started.payment.card_brand, started.payment.stripe_status) == ("visa", payment.stripe_status)
    assert payment.events.filter(kind="stripe_call", operation="payment_intent.create").count() == 1
