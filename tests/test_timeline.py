"""A payment's timeline: every Stripe call that wrote at Stripe and every status change, in order,
each with its cause; a rolled-back change leaves nothing."""

import logging

import pytest
from django.contrib.auth.models import Permission
from django.db import connection, transaction
from django.test import Client
from rest_framework.test import APIClient

from payments.models import Payment, PaymentEvent, WebhookEvent
from payments.services import payment_transition
from payments.states import PaymentStatus
from payments.webhooks import webhook_event_process
from tests.factories import BookingFactory, PaymentFactory, UserFactory

pytestmark = [pytest.mark.django_db]


def _staff():
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_payment", "view_refund"]))
    return staff


@pytest.mark.emulator
def test_pay_with_3ds_then_refund_reads_in_order_with_causes(
    stripe_env, deliver, django_capture_on_commit_callbacks
):
    booking = BookingFactory()
    api = APIClient()
    api.force_authenticate(booking.user)
    base = f"/api/bookings/{booking.pk}/payment"
    with django_capture_on_commit_callbacks(execute=True):
        started = api.post(
            f"{base}/intent/",
            {"payment_method_id": stripe_env.card("4000002500003155"), "confirm_immediately": True},
            format="json",
        ).json()
    assert started["requires_action"]
    stripe_env.authenticate(started["payment"]["payment_intent"], started["client_secret"])
    events = [
        e
        for e in stripe_env.api("GET", "/v1/events", limit="100")["data"]
        if e["type"] == "payment_intent.succeeded"
    ]
    assert deliver(events[0]).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        webhook_event_process(event_id=WebhookEvent.objects.get(stripe_event_id=events[0]["id"]).pk)
        refunded = api.post(f"{base}/refund/", {"amount": "5.00"}, format="json")
    assert refunded.status_code == 201, refunded.content
    payment = Payment.objects.get(object_id=str(booking.pk))

    staff = APIClient()
    staff.force_authenticate(_staff())
    timeline = staff.get(f"/api/payments/{payment.pk}/timeline/").json()
    rows = [
        (e["kind"], e["operation"] or f"{e['from_status']}->{e['to_status']}", e["outcome"], e["cause"])
        for e in timeline
    ]
    api_cause = f"POST {base}/intent/ (user {booking.user.pk})"
    refund_cause = f"POST {base}/refund/ (user {booking.user.pk})"
    webhook_cause = f"webhook {events[0]['id']} (payment_intent.succeeded)"
    assert rows[0] == ("stripe_call", "payment_intent.create", "ok", api_cause)
    calls = [r for r in rows if r[0] == "stripe_call"]
    changes = [r for r in rows if r[0] != "stripe_call"]
    assert [c[1] for c in calls] == ["payment_intent.create", "payment_intent.confirm", "refund.create"]
    assert [c[3] for c in calls] == [api_cause, api_cause, refund_cause]
    assert ("status", "created->requires_action", "", api_cause) in changes
    assert ("status", "requires_action->succeeded", "", webhook_cause) in changes
    assert ("refund_status", "->pending", "", refund_cause) in changes
    assert ("refund_status", "pending->succeeded", "", refund_cause) in changes
    assert ("status", "succeeded->partially_refunded", "", refund_cause) in changes
    order = [r[1] for r in rows]
    assert order.index("payment_intent.create") < order.index("payment_intent.confirm")
    assert order.index("payment_intent.confirm") < order.index("requires_action->succeeded")
    assert order.index("requires_action->succeeded") < order.index("refund.create")
    assert order.index("refund.create") < order.index("pending->succeeded")
    assert all(e["idempotency_key"] for e in timeline if e["kind"] == "stripe_call")
    assert all(e["request_id"] for e in timeline if e["kind"] == "stripe_call")


def test_a_rolled_back_change_leaves_no_entry():
    payment = PaymentFactory(status=PaymentStatus.PROCESSING)
    with pytest.raises(RuntimeError), transaction.atomic():
        payment_transition(payment=payment, status=PaymentStatus.SUCCEEDED)
        raise RuntimeError("the rest of the work failed")
    assert not PaymentEvent.objects.filter(payment=payment).exists()
    payment_transition(payment=Payment.objects.get(pk=payment.pk), status=PaymentStatus.SUCCEEDED)
    assert list(
        PaymentEvent.objects.filter(payment=payment).values_list("from_status", "to_status", "cause")
    ) == [("processing", "succeeded", "system")]


@pytest.fixture
def refused_timeline():
    """PostgreSQL refuses every timeline entry (as a full disk or a broken table would)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_refuse_entry() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'timeline refused'; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER test_refuse_entry BEFORE INSERT ON payments_paymentevent"
            " FOR EACH ROW EXECUTE FUNCTION test_refuse_entry()"
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER IF EXISTS test_refuse_entry ON payments_paymentevent")
        cursor.execute("DROP FUNCTION IF EXISTS test_refuse_entry()")


def _start_without_a_timeline(caplog) -> None:
    booking = BookingFactory()
    api = APIClient()
    api.force_authenticate(booking.user)
    with caplog.at_level(logging.WARNING, logger="payments.services"):
        response = api.post(f"/api/bookings/{booking.pk}/payment/intent/", {}, format="json")
    assert response.status_code == 200, response.content
    payment = Payment.objects.for_payable(booking).get()
    # The intent is linked although the call that made it could not be written down.
    assert payment.stripe_payment_intent_id.startswith("pi_")
    assert payment.stripe_payment_intent_id == response.json()["payment"]["payment_intent"]
    assert response.json()["client_secret"].startswith(payment.stripe_payment_intent_id)
    assert not PaymentEvent.objects.filter(payment=payment).exists()
    assert "timeline entry not written" in caplog.text


@pytest.mark.emulator
def test_a_start_whose_timeline_cannot_be_written_still_links_its_intent(
    stripe_env, refused_timeline, caplog
):
    """Inside a transaction (a host's, here the test's): the failed statement spoils nothing."""
    _start_without_a_timeline(caplog)


@pytest.mark.emulator
@pytest.mark.django_db(transaction=True)
def test_a_start_outside_any_transaction_whose_timeline_cannot_be_written_links_its_intent(
    stripe_env, refused_timeline, caplog
):
    """Outside any transaction (a request): the entry and the link are one statement, which fails."""
    _start_without_a_timeline(caplog)


def test_only_staff_read_a_timeline_and_the_admin_shows_it():
    payment = PaymentFactory(status=PaymentStatus.PROCESSING)
    payment_transition(payment=payment, status=PaymentStatus.SUCCEEDED)
    owner = APIClient()
    owner.force_authenticate(payment.owner)
    assert owner.get(f"/api/payments/{payment.pk}/timeline/").status_code == 403
    staff = _staff()
    api = APIClient()
    api.force_authenticate(staff)
    assert api.get("/api/payments/999999999/timeline/").status_code == 404
    client = Client()
    client.force_login(staff)
    page = client.get(f"/admin/payments/payment/{payment.pk}/change/")
    assert page.status_code == 200
    assert b"Timeline" in page.content and "payment: Processing → Succeeded".encode() in page.content
