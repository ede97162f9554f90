"""Stripe webhooks: verified, stored once, processed idempotently and never backwards."""

import json
import threading
import time

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client

from bookings.models import Booking
from payments.models import Dispute, Payment, Refund, WebhookEvent
from payments.signals import payment_succeeded
from payments.states import PaymentStatus
from payments.webhooks import webhook_event_process
from stripe_emulator.harness import make_event, sign_payload, stripe_object
from tests.factories import PaymentFactory

pytestmark = pytest.mark.django_db


def _intent_event(payment, event_type="payment_intent.succeeded", status="succeeded", **extra):
    intent = stripe_object(
        "payment_intent",
        id=payment.stripe_payment_intent_id,
        amount=payment.total,
        amount_received=payment.total if status == "succeeded" else 0,
        currency=payment.currency,
        status=status,
        metadata={"payment_id": str(payment.pk)},
        latest_charge="ch_test_1" if status == "succeeded" else None,
        **extra,
    )
    return make_event(event_type, intent)


def _open_payment(**kwargs):
    return PaymentFactory(stripe_payment_intent_id=f"pi_test_{time.monotonic_ns()}", **kwargs)


def _process_all():
    return [webhook_event_process(event_id=pk) for pk in WebhookEvent.objects.values_list("pk", flat=True)]


class Signals:
    def __init__(self, signal):
        self.received = []
        self.signal = signal

    def __enter__(self):
        self.signal.connect(self._got, weak=False, dispatch_uid="test-signals")
        return self

    def __exit__(self, *exc):
        self.signal.disconnect(dispatch_uid="test-signals")

    def _got(self, sender, **kwargs):
        self.received.append(kwargs)


# Signature checks -------------------------------------------------------------------------


def test_no_signature_is_refused(client):
    event = _intent_event(_open_payment())
    response = client.post("/api/webhooks/stripe/", data=json.dumps(event), content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert WebhookEvent.objects.count() == 0


def test_tampered_body_is_refused(deliver):
    event = _intent_event(_open_payment())
    tampered = json.dumps({**event, "type": "charge.refunded"}).encode()
    assert deliver(event, body=tampered).status_code == 400
    assert WebhookEvent.objects.count() == 0


def test_wrong_secret_is_refused(deliver):
    assert deliver(_intent_event(_open_payment()), secret="whsec_someone_else").status_code == 400
    assert WebhookEvent.objects.count() == 0


def test_old_timestamp_is_refused(deliver):
    response = deliver(_intent_event(_open_payment()), timestamp=int(time.time()) - 301)
    assert response.status_code == 400
    assert WebhookEvent.objects.count() == 0


def test_second_secret_is_accepted_during_rotation(deliver):
    assert deliver(_intent_event(_open_payment()), secret="whsec_test_secondary").status_code == 200
    assert WebhookEvent.objects.count() == 1


def test_not_json_is_refused(client):
    body = b"not json"
    response = client.post(
        "/api/webhooks/stripe/",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign_payload(body, "whsec_test_primary"),
    )
    assert response.status_code == 400


def test_get_is_not_allowed(client):
    assert client.get("/api/webhooks/stripe/").status_code == 405


# Storing and processing ---------------------------------------------------------------------------


def test_event_is_stored_then_processed(deliver, django_capture_on_commit_callbacks):
    payment = _open_payment(status=PaymentStatus.CREATED)
    event = _intent_event(payment)
    response = deliver(event)
    assert response.status_code == 200 and response.json() == {"received": True, "duplicate": False}
    row = WebhookEvent.objects.get()
    assert (row.stripe_event_id, row.type, row.status) == (event["id"], "payment_intent.succeeded", "pending")
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.CREATED  # not processed inline
    with django_capture_on_commit_callbacks(execute=True):
        processed = webhook_event_process(event_id=row.pk)
    assert processed.status == "processed" and processed.attempts == 1
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.stripe_charge_id == "ch_test_1"
    assert Booking.objects.get(pk=payment.object_id).status == Booking.Status.CONFIRMED


def test_duplicate_delivery_is_acknowledged_once(deliver):
    event = _intent_event(_open_payment())
    assert deliver(event).json()["duplicate"] is False
    assert deliver(event).json()["duplicate"] is True
    assert WebhookEvent.objects.count() == 1


def test_unknown_type_is_acknowledged_and_ignored(deliver):
    event = make_event("customer.tax_id.created", {"id": "txi_1", "object": "tax_id"})
    assert deliver(event).status_code == 200
    assert _process_all()[0].status == "ignored"


def test_failed_after_succeeded_changes_nothing(deliver):
    payment = _open_payment(status=PaymentStatus.PROCESSING)
    deliver(_intent_event(payment))
    deliver(
        _intent_event(
            payment,
            "payment_intent.payment_failed",
            "requires_payment_method",
            last_payment_error={"code": "card_declined", "message": "Declined"},
        )
    )
    _process_all()
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.succeeded_at is not None


def test_succeeded_before_anything_else_still_lands(deliver):
    payment = _open_payment(status=PaymentStatus.CREATED)
    deliver(_intent_event(payment))
    deliver(_intent_event(payment, "payment_intent.processing", "processing"))
    _process_all()
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.SUCCEEDED


def test_charge_refunded_before_succeeded(deliver):
    payment = _open_payment(status=PaymentStatus.REQUIRES_ACTION, stripe_charge_id="")
    refund = stripe_object(
        "refund",
        id="re_test_1",
        amount=500,
        charge="ch_test_1",
        payment_intent=payment.stripe_payment_intent_id,
        status="succeeded",
    )
    charge = stripe_object(
        "charge",
        id="ch_test_1",
        amount=payment.total,
        amount_refunded=500,
        currency="usd",
        status="succeeded",
        paid=True,
        payment_intent=payment.stripe_payment_intent_id,
        refunds={
            "object": "list",
            "data": [refund],
            "has_more": False,
            "url": "/v1/charges/ch_test_1/refunds",
        },
    )
    deliver(make_event("charge.refunded", charge))
    deliver(_intent_event(payment))
    _process_all()
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PARTIALLY_REFUNDED
    assert payment.card_last4 == "4242"
    assert Refund.objects.get(payment=payment).amount == 500


def test_checkout_completed_twice(deliver, django_capture_on_commit_callbacks):
    payment = PaymentFactory(stripe_checkout_session_id="cs_test_1")
    session = stripe_object(
        "checkout.session",
        id="cs_test_1",
        client_reference_id=str(payment.pk),
        status="complete",
        payment_status="paid",
        payment_intent="pi_test_checkout",
        amount_total=payment.total,
        currency=payment.currency,
    )
    first = make_event("checkout.session.completed", session)
    second = make_event("checkout.session.completed", session)
    deliver(first)
    deliver(second)
    with Signals(payment_succeeded) as got, django_capture_on_commit_callbacks(execute=True):
        _process_all()
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.stripe_payment_intent_id == "pi_test_checkout"
    assert len(got.received) == 1


@pytest.mark.parametrize("hold_over", [True, False])
def test_checkout_expired_releases_the_seats(deliver, django_capture_on_commit_callbacks, hold_over):
    """A session that ran out releases the seats once the booking's hold is over; one closed
    while the hold still runs (the payer went on to pay by card) keeps them (issue 17)."""
    from datetime import timedelta

    from django.utils import timezone

    payment = PaymentFactory(stripe_checkout_session_id="cs_test_2")
    if hold_over:
        Booking.objects.filter(pk=payment.object_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    session = stripe_object(
        "checkout.session",
        id="cs_test_2",
        client_reference_id=str(payment.pk),
        status="expired",
        payment_status="unpaid",
    )
    deliver(make_event("checkout.session.expired", session))
    with django_capture_on_commit_callbacks(execute=True):
        _process_all()
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.CANCELED
    booking = Booking.objects.get(pk=payment.object_id)
    if hold_over:
        assert booking.status == Booking.Status.EXPIRED
        assert booking.event.seats_left() == booking.event.capacity
    else:
        assert booking.status == Booking.Status.PENDING
        assert booking.event.seats_left() == booking.event.capacity - booking.quantity


def test_dispute_created_and_won(deliver, django_capture_on_commit_callbacks):
    payment = _open_payment(status=PaymentStatus.SUCCEEDED, stripe_charge_id="ch_disputed")
    dispute = stripe_object(
        "dispute",
        id="dp_test_1",
        charge="ch_disputed",
        amount=payment.total,
        status="needs_response",
        reason="fraudulent",
    )
    deliver(make_event("charge.dispute.created", dispute))
    with django_capture_on_commit_callbacks(execute=True):
        _process_all()
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.DISPUTED
    row = Dispute.objects.get()
    assert (row.reason, row.status, row.amount) == ("fraudulent", "needs_response", payment.total)
    assert row.evidence_due_by is not None
    assert Booking.objects.get(pk=payment.object_id).disputed_at is not None
    successes = []

    def record(sender, payment, **kwargs):
        successes.append(payment.pk)

    payment_succeeded.connect(record, weak=False)
    try:
        deliver(make_event("charge.dispute.closed", {**dispute, "status": "won"}))
        with django_capture_on_commit_callbacks(execute=True):
            _process_all()
    finally:
        payment_succeeded.disconnect(record)
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.SUCCEEDED
    # Won back, not paid again: no success signal (no second confirmation, no second seat).
    assert successes == []


def test_refund_failed_is_recorded(deliver, caplog):
    payment = _open_payment(status=PaymentStatus.PARTIALLY_REFUNDED)
    Refund.objects.create(
        payment=payment,
        amount=100,
        currency="usd",
        stripe_refund_id="re_fail",
        status="succeeded",
        idempotency_key="k-fail",
    )
    refund = stripe_object(
        "refund",
        id="re_fail",
        amount=100,
        status="failed",
        failure_reason="expired_or_canceled_card",
        payment_intent=payment.stripe_payment_intent_id,
    )
    deliver(make_event("refund.failed", refund))
    _process_all()
    row = Refund.objects.get(stripe_refund_id="re_fail")
    assert (row.status, row.failure_reason) == ("failed", "expired_or_canceled_card")
    assert "staff attention" in caplog.text


# Failures and replay --------------------------------------------------------------------------------


@pytest.mark.emulator
def test_failing_handler_leaves_nothing_half_written_and_replay_applies_once(stripe_env, deliver):
    payment = _open_payment(status=PaymentStatus.PROCESSING, stripe_charge_id="")
    charge = stripe_object(
        "charge",
        id="ch_half",
        amount=payment.total,
        amount_refunded=300,
        currency="usd",
        status="succeeded",
        paid=True,
        payment_intent=payment.stripe_payment_intent_id,
        refunds=None,
    )
    deliver(make_event("charge.refunded", charge))
    stripe_env.fail("GET", "/v1/refunds", status=500, times=10)
    row = _process_all()[0]
    assert row.status == "failed" and row.attempts == 1
    assert "ProviderUnavailable" in row.last_error
    payment.refresh_from_db()
    assert (payment.status, payment.stripe_charge_id) == (PaymentStatus.PROCESSING, "")  # rolled back
    # Stripe is back: the listed refund is served from a recorded answer.
    stripe_env.faults.clear()
    refund = stripe_object(
        "refund",
        id="re_half",
        amount=300,
        status="succeeded",
        charge="ch_half",
        payment_intent=payment.stripe_payment_intent_id,
    )
    stripe_env.fail(
        "GET",
        "/v1/refunds",
        status=200,
        body={"object": "list", "data": [refund], "has_more": False, "url": "/v1/refunds"},
        times=2,
    )
    call_command("replay_webhook_events", "--failed")
    call_command("replay_webhook_events", "--ids", row.stripe_event_id)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PARTIALLY_REFUNDED
    assert Refund.objects.filter(payment=payment).count() == 1
    assert WebhookEvent.objects.get(pk=row.pk).status == "processed"


def test_replay_needs_a_selection():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("replay_webhook_events")


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_deliveries():
    """50 deliveries at once, then processing raced by 8 threads (and any worker that is running)."""
    payment = _open_payment(status=PaymentStatus.PROCESSING)
    event = _intent_event(payment)
    payload = json.dumps(event).encode()
    statuses: list[int] = []

    def post(barrier):
        try:
            barrier.wait()
            response = Client().post(
                "/api/webhooks/stripe/",
                data=payload,
                content_type="application/json",
                HTTP_STRIPE_SIGNATURE=sign_payload(payload, "whsec_test_primary"),
            )
            statuses.append(response.status_code)
        finally:
            connection.close()

    def process(barrier, row_id):
        try:
            barrier.wait()
            webhook_event_process(event_id=row_id)
        finally:
            connection.close()

    def run_all(target, count, *args):
        barrier = threading.Barrier(count)
        threads = [threading.Thread(target=target, args=(barrier, *args)) for _ in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    with Signals(payment_succeeded) as got:
        run_all(post, 50)
        assert len(statuses) == 50 and all(200 <= s < 300 for s in statuses)
        assert WebhookEvent.objects.count() == 1
        run_all(process, 8, WebhookEvent.objects.get().pk)
    assert len(got.received) == 1
    row = WebhookEvent.objects.get()
    assert row.status == "processed" and row.attempts == 1
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.SUCCEEDED


@pytest.mark.emulator
def test_acknowledgement_does_not_wait_for_slow_work(stripe_env, deliver):
    payment = _open_payment(status=PaymentStatus.SUCCEEDED, stripe_charge_id="ch_slow")
    charge = stripe_object(
        "charge",
        id="ch_slow",
        amount=payment.total,
        amount_refunded=100,
        currency="usd",
        status="succeeded",
        paid=True,
        payment_intent=payment.stripe_payment_intent_id,
        refunds=None,
    )
    stripe_env.requests.clear()
    assert deliver(make_event("charge.refunded", charge)).status_code == 200
    # Receiving verifies and stores: no Stripe call (however slow Stripe is) happens before the 200.
    assert stripe_env.calls() == []
    assert WebhookEvent.objects.get().status == "pending"
    _process_all()
    assert [c.path for c in stripe_env.calls()][:1] == ["/v1/refunds"]  # the work, done afterwards


# Health ------------------------------------------------------------------------------------------------


def test_health_reports_backlog_and_failures(client, deliver):
    assert client.get("/api/webhooks/health/").status_code == 200
    deliver(_intent_event(_open_payment()))
    body = client.get("/api/webhooks/health/").json()
    assert body["pending"] == 1 and body["healthy"] is True and body["last_received_at"]
    WebhookEvent.objects.update(status="failed", attempts=5)
    response = client.get("/api/webhooks/health/")
    assert response.status_code == 503 and response.json()["failed_permanently"] == 1


@pytest.mark.django_db(transaction=True)
def test_database_that_cannot_store_the_event_answers_503(settings):
    """With the events table locked elsewhere the endpoint answers 503 at once (Stripe retries)."""
    settings.PAYMENTS = {**settings.PAYMENTS, "WEBHOOK_LOCK_TIMEOUT": 0.3}
    event = _intent_event(_open_payment())
    payload = json.dumps(event).encode()
    locked, release = threading.Event(), threading.Event()

    def hold_lock():
        from django.db import transaction

        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("LOCK TABLE payments_webhookevent IN ACCESS EXCLUSIVE MODE")
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    locked.wait(5)

    def post():
        return Client().post(
            "/api/webhooks/stripe/",
            data=payload,
            content_type="application/json",
            HTTP_STRIPE_SIGNATURE=sign_payload(payload, "whsec_test_primary"),
        )

    try:
        started = time.monotonic()
        refused = post()
        waited = time.monotonic() - started
    finally:
        release.set()
        holder.join()
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "unavailable"
    assert waited < 3
    assert WebhookEvent.objects.count() == 0
    assert post().status_code == 200  # Stripe's next delivery
    assert WebhookEvent.objects.count() == 1


# The stored row is the queue ----------------------------------------------------------------------

DRAIN = "payments.tasks.process_pending_webhook_events"


@pytest.mark.django_db(transaction=True)
def test_storing_a_new_event_is_one_round_trip_and_a_duplicate_two(deliver):
    from django.test.utils import CaptureQueriesContext

    from payments.gateway import get_gateway
    from payments.webhooks import webhook_event_store

    event = get_gateway().event_from_payload(_intent_event(_open_payment()))
    with CaptureQueriesContext(connection) as new:
        first = webhook_event_store(event=event)
    with CaptureQueriesContext(connection) as again:
        second = webhook_event_store(event=event)
    assert (first.created, second.created, first.pk) == (True, False, second.pk)
    assert (len(new), len(again)) == (1, 2)
    row = WebhookEvent.objects.get()
    assert (row.stripe_event_id, row.type, row.status, row.payload) == (
        event.id, event.type, "pending", event.raw,
    )  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_events_costs_few_nudges_and_one_follows_the_last(deliver, settings):
    from tests.conftest import wait_for
    from tests.test_background import Published

    settings.PAYMENTS = {**settings.PAYMENTS, "WEBHOOK_NUDGE_INTERVAL": 1.0}
    nudged_at: list[float] = []
    with Published() as published:
        from celery.signals import before_task_publish

        def when(sender=None, **kwargs):
            if sender == DRAIN:
                nudged_at.append(time.monotonic())

        before_task_publish.connect(when, weak=False)
        try:
            started = time.monotonic()
            for _ in range(19):
                assert deliver(_intent_event(_open_payment())).status_code == 200
            before_last = time.monotonic()
            assert deliver(_intent_event(_open_payment())).status_code == 200
            wait_for(
                lambda: nudged_at and nudged_at[-1] > before_last, message="a nudge after the last event"
            )
            elapsed = time.monotonic() - started
        finally:
            before_task_publish.disconnect(when)
    drains = [name for name, _args, _countdown in published.tasks if name == DRAIN]
    # One at the start, then at most one per interval (and one after the last).
    assert 1 <= len(drains) <= int(elapsed / 1.0) + 2, (len(drains), elapsed)
    assert WebhookEvent.objects.filter(status="pending").count() == 20


@pytest.mark.django_db(transaction=True)
def test_drains_side_by_side_process_every_event_once():
    from payments.gateway import get_gateway
    from payments.webhooks import webhook_event_store, webhook_events_drain

    payments = [_open_payment() for _ in range(24)]
    for payment in payments:
        webhook_event_store(event=get_gateway().event_from_payload(_intent_event(payment)))
    drained: list[int] = []

    def drain():
        try:
            drained.extend(row.pk for row in webhook_events_drain()[0])
        finally:
            connection.close()

    threads = [threading.Thread(target=drain) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(drained) == sorted(WebhookEvent.objects.values_list("pk", flat=True))
    assert set(WebhookEvent.objects.values_list("status", "attempts")) == {("processed", 1)}
    assert set(Payment.objects.values_list("status", flat=True)) == {PaymentStatus.SUCCEEDED}


def test_an_event_that_fails_in_the_drain_is_retried_on_its_own_with_backoff(
    django_capture_on_commit_callbacks,
):
    from payments.tasks import process_pending_webhook_events
    from tests.test_background import Published

    broken = make_event("payment_intent.succeeded", {"object": "payment_intent"})  # no id
    WebhookEvent.objects.create(stripe_event_id=broken["id"], type=broken["type"], payload=broken)
    with Published() as published, django_capture_on_commit_callbacks(execute=True):
        assert process_pending_webhook_events.apply().get() == 1
    row = WebhookEvent.objects.get()
    assert (row.status, row.attempts) == ("failed", 1)
    [(name, args, countdown)] = published.tasks
    assert (name, args) == ("payments.tasks.process_webhook_event", [row.pk]) and countdown > 0


def test_a_drain_out_of_time_says_events_may_be_left():
    from payments.gateway import get_gateway
    from payments.webhooks import webhook_event_store, webhook_events_drain

    for _ in range(2):
        webhook_event_store(event=get_gateway().event_from_payload(_intent_event(_open_payment())))
    assert webhook_events_drain(seconds=0) == ([], True)
    done, more = webhook_events_drain(seconds=60)
    assert (len(done), more) == (2, False)


@pytest.mark.django_db(transaction=True)
def test_an_event_whose_outcome_cannot_be_recorded_is_failed_and_the_drain_goes_on():
    """A database refusal while recording an event's outcome rolls its work back; the event is
    marked failed on its own, so the next drain does not stop on it again."""
    from payments.gateway import get_gateway
    from payments.webhooks import webhook_event_store, webhook_events_drain

    stuck, fine = _open_payment(), _open_payment()
    stored = [
        webhook_event_store(event=get_gateway().event_from_payload(_intent_event(p))) for p in (stuck, fine)
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION refuse_outcome() RETURNS trigger AS $$ BEGIN"
            " RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql"
        )
        cursor.execute(
            "CREATE TRIGGER refuse_outcome BEFORE UPDATE ON payments_webhookevent FOR EACH ROW"
            f" WHEN (NEW.id = {stored[0].pk} AND NEW.status = 'processed') EXECUTE FUNCTION refuse_outcome()"
        )
    try:
        done, more = webhook_events_drain()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER refuse_outcome ON payments_webhookevent")
            cursor.execute("DROP FUNCTION refuse_outcome()")
    assert ([row.pk for row in done], more) == ([stored[0].pk, stored[1].pk], False)
    first, second = (WebhookEvent.objects.get(pk=s.pk) for s in stored)
    assert (first.status, first.attempts, second.status) == ("failed", 1, "processed")
    assert Payment.objects.get(pk=stuck.pk).status != PaymentStatus.SUCCEEDED  # its work rolled back
    assert Payment.objects.get(pk=fine.pk).status == PaymentStatus.SUCCEEDED
