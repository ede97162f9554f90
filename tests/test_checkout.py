"""Stripe's hosted Checkout: a cancelled or expired booking closes its session at Stripe, and money
that still arrives for it goes back by itself."""

import pytest
from localstripe.errors import UserError

from bookings.models import Booking
from bookings.services import booking_cancel_by_owner, booking_checkout, booking_expire_due
from payments import services
from payments.gateway import get_gateway
from payments.models import Payment
from payments.reconcile import payments_reconcile
from payments.states import PaymentStatus
from payments.tasks import retry_refund
from tests.conftest import wait_for
from tests.factories import BookingFactory

pytestmark = [pytest.mark.django_db, pytest.mark.emulator]


def _start(booking):
    return booking_checkout(
        booking_id=booking.pk,
        success_url="http://site.test/ok?session_id={CHECKOUT_SESSION_ID}",
        cancel_url="http://site.test/no",
    )


def _session(stripe, session_id):
    return stripe.api("GET", f"/v1/checkout/sessions/{session_id}")


def test_cancelled_booking_expires_its_session_and_late_money_is_refunded(
    stripe_env, django_capture_on_commit_callbacks
):
    booking = BookingFactory()
    payment, session = _start(booking)
    with django_capture_on_commit_callbacks(execute=True):
        booking_cancel_by_owner(booking_id=booking.pk, user=booking.user)
    assert _session(stripe_env, session.id)["status"] == "expired"
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.CANCELED
    with pytest.raises(UserError):  # Stripe takes no payment on an expired session...
        stripe_env.complete_checkout(session.id)
    # ...but one already under way when it expired goes through.
    paid = stripe_env.complete_checkout(session.id, force=True)
    with django_capture_on_commit_callbacks(execute=True) as queued:
        services.payment_sync_checkout(session=get_gateway().checkout_from_object(paid))
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED  # recorded as money taken, not as a sale
    refund = payment.refunds.get()
    assert refund.status == "pending" and queued  # the refund's submission is queued
    with django_capture_on_commit_callbacks(execute=True):
        retry_refund.apply(args=(refund.pk,))  # as the worker runs it
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.REFUNDED
    refund.refresh_from_db()
    assert (refund.amount, refund.status, refund.reason) == (payment.total, "succeeded", "paid_after_cancel")
    refunds = stripe_env.api("GET", "/v1/refunds", payment_intent=paid["payment_intent"])["data"]
    assert [r["amount"] for r in refunds] == [payment.total]
    assert Booking.objects.get(pk=booking.pk).status == Booking.Status.CANCELLED
    with django_capture_on_commit_callbacks(execute=True):
        report = payments_reconcile(everything=True)
    assert report.unresolved == []
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.REFUNDED


def test_late_money_found_only_by_reconciliation_is_refunded(stripe_env, django_capture_on_commit_callbacks):
    booking = BookingFactory()
    payment, session = _start(booking)
    booking_cancel_by_owner(booking_id=booking.pk, user=booking.user)
    stripe_env.complete_checkout(session.id, force=True)
    stripe_env.forget_events()  # no webhook, no event: only the PaymentIntent tells
    with django_capture_on_commit_callbacks(execute=True):
        report = payments_reconcile(everything=True)
    assert [(f.kind, f.fixed) for f in report.findings] == [("paid_after_cancel", True)]
    with django_capture_on_commit_callbacks(execute=True):
        retry_refund.apply(args=(Payment.objects.get(pk=payment.pk).refunds.get().pk,))
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.REFUNDED
    assert payments_reconcile(everything=True).unresolved == []


def test_expired_hold_expires_the_session(stripe_env, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    booking = BookingFactory()
    payment, session = _start(booking)
    Booking.objects.filter(pk=booking.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert booking_expire_due() == {"expired": 1, "skipped": 0, "confirmed": 0}
    assert _session(stripe_env, session.id)["status"] == "expired"
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.CANCELED
    assert Booking.objects.get(pk=booking.pk).status == Booking.Status.EXPIRED


def test_paid_session_cannot_be_cancelled(stripe_env, django_capture_on_commit_callbacks):
    from payments.exceptions import IllegalTransition

    booking = BookingFactory()
    payment, session = _start(booking)
    stripe_env.complete_checkout(session.id)  # paid; its webhook has not arrived yet
    with pytest.raises(IllegalTransition):
        services.payment_cancel(payment=payment)
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.SUCCEEDED


def test_session_expiry_is_inside_stripes_window(stripe_env):
    import time

    _start(BookingFactory())
    sent = int(stripe_env.calls("POST", "/v1/checkout/sessions")[0].params["expires_at"])
    assert time.time() + 30 * 60 < sent <= time.time() + 24 * 3600


def test_a_session_that_is_not_the_payments_own_never_pays_it(stripe_env, deliver):
    """A signed checkout.session.completed naming our payment (a Payment Link with a chosen
    client_reference_id, another app on the account) for another session or amount."""
    from payments.models import Installation, WebhookEvent
    from payments.webhooks import webhook_event_process
    from stripe_emulator.harness import make_event, stripe_object

    booking = BookingFactory()
    payment, session = _start(booking)
    ours = {"installation": Installation.current_id(), "payment_uid": str(payment.uid)}
    forged = [
        # Another session claiming the payment by reference and by our own metadata.
        {"id": "cs_test_other", "client_reference_id": str(payment.uid), "metadata": ours},
        # Our session id, but 0.50 paid.
        {"id": session.id, "amount_total": 50},
        # Our session id, in another currency.
        {"id": session.id, "currency": "eur"},
    ]
    for overrides in forged:
        fields = {"amount_total": payment.total, "currency": "usd", **overrides}
        obj = stripe_object("checkout.session", status="complete", payment_status="paid", **fields)
        event = make_event("checkout.session.completed", obj)
        assert deliver(event).status_code == 200
        webhook_event_process(event_id=WebhookEvent.objects.get(stripe_event_id=event["id"]).pk)
        assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.CREATED
    assert Booking.objects.get(pk=booking.pk).status == Booking.Status.PENDING


def test_cancelling_a_booking_cancels_its_failed_attempt_too_and_retry_is_refused(stripe_env):
    from rest_framework.test import APIClient

    booking = BookingFactory()
    api = APIClient()
    api.force_authenticate(booking.user)
    base = f"/api/bookings/{booking.pk}/payment"
    declined = api.post(
        f"{base}/intent/",
        {"payment_method_id": stripe_env.card("4000000000000002"), "confirm_immediately": True},
        format="json",
    )
    assert declined.status_code == 402
    failed = Payment.objects.get(object_id=str(booking.pk))
    booking_cancel_by_owner(booking_id=booking.pk, user=booking.user)
    # The failed intent could still be confirmed with its client secret: it is canceled at Stripe.
    intent = stripe_env.api("GET", f"/v1/payment_intents/{failed.stripe_payment_intent_id}")
    assert intent["status"] == "canceled"
    assert Payment.objects.get(pk=failed.pk).status == PaymentStatus.CANCELED
    retried = api.post(f"{base}/retry/", {"payment_method_id": stripe_env.card()}, format="json")
    assert retried.status_code == 409 and retried.json()["error"]["code"] == "not_payable"
    assert Payment.objects.filter(object_id=str(booking.pk)).count() == 1


def test_money_for_a_booking_cancelled_meanwhile_is_refunded(
    stripe_env, django_capture_on_commit_callbacks, caplog
):
    from bookings.services import booking_cancel, booking_pay
    from bookings.tasks import refund_unseated_payment

    booking = BookingFactory()
    started = booking_pay(booking_id=booking.pk, payment_method_id=stripe_env.card())
    booking_cancel(booking_id=booking.pk)  # staff cancel it while the payer is paying
    paid = stripe_env.api("POST", f"/v1/payment_intents/{started.intent.id}/confirm")
    with django_capture_on_commit_callbacks(execute=True):
        services.payment_sync_intent(intent=get_gateway().intent_from_object(paid))
    assert "paid booking cannot be confirmed: refunding" in caplog.text
    with django_capture_on_commit_callbacks(execute=True):
        refund_unseated_payment.apply(args=(started.payment.pk,))  # as the worker runs it
    assert Payment.objects.get(pk=started.payment.pk).status == PaymentStatus.REFUNDED
    assert Booking.objects.get(pk=booking.pk).status == Booking.Status.CANCELLED


def test_a_second_attempt_that_also_paid_is_refunded_as_a_duplicate(
    stripe_env, django_capture_on_commit_callbacks
):
    from bookings.services import booking_pay

    booking = BookingFactory()
    first = booking_pay(booking_id=booking.pk, payment_method_id=stripe_env.card())
    # A second attempt, and its intent, for the same booking (an older client, a bug elsewhere).
    Payment.objects.filter(pk=first.payment.pk).update(status=PaymentStatus.FAILED)
    with django_capture_on_commit_callbacks(execute=True):  # the success confirms the booking
        second = booking_pay(booking_id=booking.pk, payment_method_id=stripe_env.card(), confirm=True)
    assert second.payment.status == PaymentStatus.SUCCEEDED
    paid = stripe_env.api("POST", f"/v1/payment_intents/{first.intent.id}/confirm")
    with django_capture_on_commit_callbacks(execute=True):
        services.payment_sync_intent(intent=get_gateway().intent_from_object(paid))
    duplicate = Payment.objects.get(pk=first.payment.pk)
    assert duplicate.status == PaymentStatus.SUCCEEDED
    refund = duplicate.refunds.get()
    assert (refund.amount, refund.reason) == (duplicate.total, "duplicate")
    with django_capture_on_commit_callbacks(execute=True):  # the refund's signal reaches bookings
        retry_refund.apply(args=(refund.pk,))
    assert Payment.objects.get(pk=first.payment.pk).status == PaymentStatus.REFUNDED
    assert Payment.objects.get(pk=second.payment.pk).status == PaymentStatus.SUCCEEDED
    # The booking its real payment confirmed stays confirmed.
    assert Booking.objects.get(pk=booking.pk).status == Booking.Status.CONFIRMED


def test_creating_a_session_stripe_made_but_did_not_answer_is_repeated_safely(stripe_env):
    from payments.exceptions import ProviderUnavailable

    booking = BookingFactory()
    stripe_env.slow_after_forward("POST", "/v1/checkout/sessions", delay=2.5, times=4)  # every try
    with pytest.raises(ProviderUnavailable):
        _start(booking)
    payment, session = _start(booking)  # the payer clicks again, seconds later
    creates = stripe_env.calls("POST", "/v1/checkout/sessions")
    assert len({c.idempotency_key for c in creates}) == 1 and creates[-1].replayed
    assert len(stripe_env.api("GET", "/v1/checkout/sessions")["data"]) == 1
    assert Payment.objects.get(pk=payment.pk).stripe_checkout_session_id == session.id


def _in_another_tab(action):
    """Run `action` in a thread of its own (its own database connection); returns a function
    that waits for it and gives what it returned or raised."""
    import threading

    from django.db import connection

    outcome = {}

    def run():
        try:
            outcome["value"] = action()
        except Exception as exc:  # what the other tab's request ended with
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()

    def result():
        thread.join(30)
        return outcome

    return result


@pytest.mark.django_db(transaction=True)
def test_a_card_start_that_finds_the_hosted_page_took_the_attempt_meanwhile_steps_back(stripe_env):
    """Two tabs: the card's intent is being made when the hosted page takes the attempt. The page
    keeps it; the card start answers payment_in_progress and cancels the intent it made, whose
    secret nobody got: only one of them can ever be paid."""
    from bookings.services import booking_pay

    booking = BookingFactory()
    card = stripe_env.card()
    stripe_env.slow_after_forward("POST", "/v1/payment_intents", delay=1.5)
    card_tab = _in_another_tab(lambda: booking_pay(booking_id=booking.pk, payment_method_id=card))
    wait_for(lambda: stripe_env.calls("POST", "/v1/payment_intents"), interval=0.02)  # in flight
    payment, session = _start(booking)
    outcome = card_tab()
    assert getattr(outcome.get("error"), "code", None) == "payment_in_progress", outcome
    payment = Payment.objects.get(pk=payment.pk)
    assert (payment.stripe_checkout_session_id, payment.stripe_payment_intent_id) == (session.id, "")
    [raced] = [
        i for i in stripe_env.api("GET", "/v1/payment_intents")["data"]
        if i["metadata"].get("payment_id") == str(payment.pk)
    ]  # fmt: skip
    assert raced["status"] == "canceled" and _session(stripe_env, session.id)["status"] == "open"
    # Its payment_intent.canceled, or reconciliation, finds the attempt by the intent's metadata:
    # the attempt stays the hosted page's, open.
    services.payment_sync_intent(intent=get_gateway().retrieve_intent(raced["id"]))
    report = payments_reconcile(everything=True)
    assert not [f for f in report.findings if f.stripe_id == raced["id"]], report.findings
    payment = Payment.objects.get(pk=payment.pk)
    assert (payment.status, payment.stripe_payment_intent_id) == (PaymentStatus.CREATED, "")


@pytest.mark.django_db(transaction=True)
def test_a_hosted_page_that_finds_a_card_took_the_attempt_meanwhile_is_closed(stripe_env):
    from bookings.services import booking_pay

    booking = BookingFactory()
    stripe_env.slow_after_forward("POST", "/v1/checkout/sessions", delay=1.5)
    page_tab = _in_another_tab(lambda: _start(booking))
    wait_for(lambda: stripe_env.calls("POST", "/v1/checkout/sessions"), interval=0.02)  # in flight
    started = booking_pay(booking_id=booking.pk)
    outcome = page_tab()
    assert getattr(outcome.get("error"), "code", None) == "payment_in_progress", outcome
    payment = Payment.objects.get(pk=started.payment.pk)
    assert (payment.stripe_payment_intent_id, payment.stripe_checkout_session_id) == (started.intent.id, "")
    [session] = stripe_env.api("GET", "/v1/checkout/sessions")["data"]
    assert session["status"] == "expired"
    # Its checkout.session.expired finds the attempt by the session's metadata: the card's
    # attempt is not canceled by it.
    services.payment_sync_checkout(session=get_gateway().retrieve_checkout_session(session["id"]))
    payment = Payment.objects.get(pk=payment.pk)
    assert (payment.status, payment.stripe_checkout_session_id) == (PaymentStatus.CREATED, "")
