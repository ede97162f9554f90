"""reconcile_payments against the emulator: fixes what moved forward, reports the rest, in pages."""

import io
import json

import pytest
import requests
from django.core.management import call_command
from django.forms.models import model_to_dict

from bookings.models import Booking
from bookings.services import booking_pay
from payments.models import Payment, Refund, WebhookEvent
from payments.reconcile import payments_reconcile
from payments.states import PaymentStatus
from tests.factories import BookingFactory, PaymentFactory, bulk_paid_payments

pytestmark = [pytest.mark.django_db, pytest.mark.emulator]


def _paid_at_stripe_only(stripe):
    """A payment the browser completed at Stripe; its webhook never reached us."""
    booking = BookingFactory()
    started = booking_pay(booking_id=booking.pk, payment_method_id=stripe.card())
    stripe.api("POST", f"/v1/payment_intents/{started.intent.id}/confirm")
    assert Payment.objects.get(pk=started.payment.pk).status == PaymentStatus.CREATED
    return started.payment


def _run(*args):
    out = io.StringIO()
    try:
        call_command("reconcile_payments", *args, stdout=out, stderr=io.StringIO())
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue()


def _snapshot():
    return (
        [model_to_dict(p) for p in Payment.objects.order_by("pk")],
        [model_to_dict(r) for r in Refund.objects.order_by("pk")],
        WebhookEvent.objects.count(),
    )


def test_missed_webhooks_and_dashboard_refunds_are_fixed(stripe_env, django_capture_on_commit_callbacks):
    missed = _paid_at_stripe_only(stripe_env)
    paid = booking_pay(
        booking_id=BookingFactory().pk, payment_method_id=stripe_env.card(), confirm=True
    ).payment
    stripe_env.api("POST", "/v1/refunds", payment_intent=paid.stripe_payment_intent_id, amount="500")
    with django_capture_on_commit_callbacks(execute=True):
        code, out = _run("--all")
    assert code == 0, out
    missed.refresh_from_db()
    assert missed.status == PaymentStatus.SUCCEEDED
    assert Booking.objects.get(pk=missed.object_id).status == "confirmed"
    imported = Refund.objects.get(payment=paid)
    assert (imported.amount, imported.status, imported.requested_by) == (500, "succeeded", None)
    assert Payment.objects.get(pk=paid.pk).status == PaymentStatus.PARTIALLY_REFUNDED
    # Stripe sends refund.created and charge.refunded for a dashboard refund: the missed events fix it.
    assert "missed_event" in out and "refund.created" in out and "fixed" in out
    # A second run right after finds nothing to fix.
    code, out = _run("--all")
    assert code == 0 and "Nothing to fix" in out


def test_dashboard_refund_without_its_events_is_imported(stripe_env):
    paid = booking_pay(
        booking_id=BookingFactory().pk, payment_method_id=stripe_env.card(), confirm=True
    ).payment
    stripe_env.api("POST", "/v1/refunds", payment_intent=paid.stripe_payment_intent_id, amount="500")
    stripe_env.forget_events()
    report = payments_reconcile(everything=True)
    assert [(f.kind, f.fixed) for f in report.findings] == [("refund_missing", True)]
    assert Payment.objects.get(pk=paid.pk).status == PaymentStatus.PARTIALLY_REFUNDED


def test_intents_behind_are_moved_forward_without_events(stripe_env):
    missed = _paid_at_stripe_only(stripe_env)
    stripe_env.forget_events()
    report = payments_reconcile(everything=True)
    assert [(f.kind, f.fixed) for f in report.findings] == [("status_behind", True)]
    assert Payment.objects.get(pk=missed.pk).status == PaymentStatus.SUCCEEDED


def test_tampered_amount_is_reported_not_overwritten(stripe_env):
    paid = booking_pay(
        booking_id=BookingFactory().pk, payment_method_id=stripe_env.card(), confirm=True
    ).payment
    Payment.objects.filter(pk=paid.pk).update(total=1, subtotal=1, fee=0)
    code, out = _run("--all", "--json")
    assert code == 1
    report = json.loads(out)
    unresolved = [(f["kind"], f["payment_id"]) for f in report["findings"] if not f["fixed"]]
    assert unresolved == [("amount_mismatch", paid.pk)]
    assert report["unresolved"] == 1
    assert Payment.objects.get(pk=paid.pk).total == 1


def test_dry_run_changes_nothing(stripe_env):
    _paid_at_stripe_only(stripe_env)
    paid = booking_pay(
        booking_id=BookingFactory().pk, payment_method_id=stripe_env.card(), confirm=True
    ).payment
    stripe_env.api("POST", "/v1/refunds", payment_intent=paid.stripe_payment_intent_id, amount="500")
    before = _snapshot()
    code, out = _run("--all", "--dry-run")
    assert "would fix" in out and code == 1
    assert _snapshot() == before


def test_local_success_stripe_does_not_know(stripe_env):
    ghost = PaymentFactory(status=PaymentStatus.SUCCEEDED, stripe_payment_intent_id="pi_never_existed")
    report = payments_reconcile(everything=True)
    assert [(f.kind, f.payment_id) for f in report.unresolved] == [("unknown_at_stripe", ghost.pk)]


def test_a_run_forgets_what_the_last_one_listed(stripe_env):
    """The listed intents are kept per run (a temporary table of the connection, which a worker
    keeps for many runs): a paid payment the second run's window does not list is looked up."""
    from datetime import timedelta

    from django.utils import timezone

    paid = booking_pay(
        booking_id=BookingFactory().pk, payment_method_id=stripe_env.card(), confirm=True
    ).payment
    assert payments_reconcile(everything=True).intents_checked == 1  # the first run lists it
    stripe_env.requests.clear()
    later = timezone.now() + timedelta(minutes=5)
    Payment.objects.filter(pk=paid.pk).update(updated_at=later)  # changed within the next window
    assert payments_reconcile(since=later).findings == []
    from payments.models import ReconcileListedIntent

    assert not ReconcileListedIntent.objects.exists()  # each run forgets its own rows
    assert [
        c.path for c in stripe_env.calls("GET", f"/v1/payment_intents/{paid.stripe_payment_intent_id}")
    ] == [f"/v1/payment_intents/{paid.stripe_payment_intent_id}"]


def test_stripe_payment_with_no_local_row(stripe_env):
    made = stripe_env.api(
        "POST",
        "/v1/payment_intents",
        amount="1000",
        currency="usd",
        payment_method=stripe_env.card(),
        confirm="true",
    )
    report = payments_reconcile(everything=True)
    assert [(f.kind, f.stripe_id) for f in report.unresolved] == [("no_local_payment", made["id"])]


def test_one_payment_and_the_cursor(stripe_env):
    missed = _paid_at_stripe_only(stripe_env)
    code, out = _run("--payment", str(missed.pk))
    assert code == 0 and "status_behind" in out
    assert Payment.objects.get(pk=missed.pk).status == PaymentStatus.SUCCEEDED
    first = payments_reconcile()
    assert first.since is not None
    second = payments_reconcile()
    assert second.since > first.since  # the cursor moved: only what changed since is read


def test_bad_arguments_are_sentences():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="ISO 8601"):
        call_command("reconcile_payments", "--since", "yesterday")
    with pytest.raises(CommandError, match="no payment"):
        call_command("reconcile_payments", "--payment", "999999")


def test_stripe_down_is_a_readable_error(stripe_env):
    from django.core.management.base import CommandError

    stripe_env.fail("GET", "/v1/events", status=500, times=10)
    with pytest.raises(CommandError, match="Stripe could not be read"):
        call_command("reconcile_payments", "--all", stdout=io.StringIO(), stderr=io.StringIO())


@pytest.mark.slow
def test_two_thousand_payments_take_a_few_dozen_list_calls(stripe_env, settings):
    # A page of 100 intents with their charges takes the emulator a second or more on a busy
    # machine: a timeout and its retry would count as two list calls.
    settings.PAYMENTS = {**settings.PAYMENTS, "TIMEOUT": 30.0}
    session = requests.Session()
    session.headers["Authorization"] = "Bearer sk_test_suite"
    card = stripe_env.card()
    intents = [
        session.post(
            f"{stripe_env.emulator_url}/v1/payment_intents",
            data={"amount": "2060", "currency": "usd", "payment_method": card, "confirm": "true"},
        ).json()
        for _ in range(2000)
    ]
    bulk_paid_payments(2000, owners=[BookingFactory().user], intent_ids=[intent["id"] for intent in intents])
    stripe_env.forget_events()
    stripe_env.requests.clear()
    report = payments_reconcile(everything=True)
    assert report.intents_checked == 2000 and report.findings == []
    calls = stripe_env.calls()
    assert all(c.method == "GET" for c in calls)
    assert len(calls) <= 30, [c.path for c in calls]
    assert len(stripe_env.calls("GET", "/v1/payment_intents")) == 20
