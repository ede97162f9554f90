"""Refunds: never more than was paid, checked locally under a lock; one refund per request."""

import threading

import pytest
import requests
from django.db import connection

from bookings.models import Booking
from bookings.services import booking_pay
from payments import services
from payments.exceptions import RefundNotAllowed
from payments.models import Installation, Payment, Refund
from payments.signals import payment_refund_failed, payment_refunded
from payments.states import PaymentStatus, RefundStatus
from tests.factories import BookingFactory

pytestmark = [pytest.mark.django_db, pytest.mark.emulator]


def _paid(stripe, **booking_kwargs) -> Payment:
    booking = BookingFactory(**booking_kwargs)
    result = booking_pay(booking_id=booking.pk, payment_method_id=stripe.card(), confirm=True)
    assert result.payment.status == PaymentStatus.SUCCEEDED
    return result.payment


def _stripe_refunds(stripe, payment):
    return stripe.api("GET", "/v1/refunds", payment_intent=payment.stripe_payment_intent_id)["data"]


def test_partial_refunds_never_exceed_the_payment(stripe_env):
    payment = _paid(stripe_env, quantity=5)  # 100.00 + 3.00 fee = 103.00
    total = payment.total
    first = services.refund_create(payment=payment, amount=total * 30 // 100, reason="requested_by_customer")
    assert first.status == RefundStatus.SUCCEEDED and first.stripe_refund_id.startswith("re_")
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PARTIALLY_REFUNDED
    services.refund_create(payment=payment, amount=total * 30 // 100)
    with pytest.raises(RefundNotAllowed) as info:
        services.refund_create(payment=payment, amount=total * 50 // 100)
    assert "can be refunded" in info.value.message
    assert len(_stripe_refunds(stripe_env, payment)) == 2
    assert Refund.objects.filter(payment=payment).count() == 2
    payment.refresh_from_db()
    assert payment.refundable_amount() == total - 2 * (total * 30 // 100)


def test_full_refund_cancels_the_booking(stripe_env, django_capture_on_commit_callbacks):
    payment = _paid(stripe_env)
    received = []
    payment_refunded.connect(lambda sender, **kw: received.append(kw), weak=False, dispatch_uid="t-full")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            refund = services.refund_create(payment=payment)
    finally:
        payment_refunded.disconnect(dispatch_uid="t-full")
    assert refund.amount == payment.total
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.REFUNDED
    assert Booking.objects.get(pk=payment.object_id).status == Booking.Status.CANCELLED
    assert [kw["fully_refunded"] for kw in received] == [True]
    with pytest.raises(RefundNotAllowed):
        services.refund_create(payment=payment, amount=1)


def test_refund_reason_and_key_reach_stripe(stripe_env):
    payment = _paid(stripe_env)
    refund = services.refund_create(payment=payment, amount=500, reason="requested_by_customer")
    call = stripe_env.calls("POST", "/v1/refunds")[0]
    assert call.params["reason"] == "requested_by_customer"
    assert call.params["amount"] == "500"
    assert call.idempotency_key == refund.idempotency_key == f"refund:{refund.uid}"
    assert call.params["metadata"]["installation"] == Installation.current_id()
    assert call.params["metadata"]["refund_uid"] == str(refund.uid)


def test_unpaid_payment_cannot_be_refunded(stripe_env):
    started = booking_pay(booking_id=BookingFactory().pk)
    with pytest.raises(RefundNotAllowed):
        services.refund_create(payment=started.payment)
    assert stripe_env.calls("POST", "/v1/refunds") == []


@pytest.mark.parametrize("amount", [0, -5])
def test_non_positive_refund_is_refused(stripe_env, amount):
    payment = _paid(stripe_env)
    with pytest.raises(RefundNotAllowed):
        services.refund_create(payment=payment, amount=amount)


def test_unreachable_stripe_keeps_the_refund_pending_for_a_retry(
    stripe_env, django_capture_on_commit_callbacks
):
    from celery.signals import before_task_publish

    payment = _paid(stripe_env)
    stripe_env.fail("POST", "/v1/refunds", status=503, times=4)
    published = []

    def record(sender=None, headers=None, body=None, **kwargs):
        published.append((sender, list(body[0])))

    before_task_publish.connect(record, weak=False)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            refund = services.refund_create(payment=payment, amount=1000)
    finally:
        before_task_publish.disconnect(record)
    assert refund.status == RefundStatus.PENDING and not refund.stripe_refund_id
    assert published == [("payments.tasks.retry_refund", [refund.pk])]  # queued on Redis for a worker
    # The balance stays reserved while the refund is pending.
    with pytest.raises(RefundNotAllowed):
        services.refund_create(payment=payment, amount=payment.total - 999)
    from payments.tasks import retry_refund

    assert retry_refund.apply(args=[refund.pk]).get() == RefundStatus.SUCCEEDED
    refund.refresh_from_db()
    assert refund.status == RefundStatus.SUCCEEDED
    keys = {c.idempotency_key for c in stripe_env.calls("POST", "/v1/refunds")}
    assert keys == {refund.idempotency_key}
    assert len(_stripe_refunds(stripe_env, payment)) == 1


def test_refund_retry_gives_up_visibly(stripe_env, settings):
    from payments.tasks import retry_refund

    settings.PAYMENTS = {**settings.PAYMENTS, "REFUND_RETRY_ATTEMPTS": 1}
    payment = _paid(stripe_env)
    stripe_env.fail("POST", "/v1/refunds", status=503, times=20)
    refund = services.refund_create(payment=payment, amount=1000)
    assert retry_refund.apply(args=[refund.pk]).get() == "failed"
    refund.refresh_from_db()
    assert refund.status == RefundStatus.FAILED and refund.failure_reason.startswith("Gave up")
    assert payment.refundable_amount() == payment.total  # the reserved amount is released


def test_refund_made_in_the_dashboard_is_imported(stripe_env):
    payment = _paid(stripe_env)
    made = stripe_env.api(
        "POST", "/v1/refunds", payment_intent=payment.stripe_payment_intent_id, amount="700"
    )
    from payments.gateway import get_gateway

    refund = services.refund_sync(info=get_gateway().refund_from_object(made))
    assert refund.amount == 700 and refund.requested_by is None
    again = services.refund_sync(info=get_gateway().refund_from_object(made))
    assert again.pk == refund.pk
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PARTIALLY_REFUNDED


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_full_refunds_make_one(stripe_env):
    payment = _paid(stripe_env)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def refund():
        try:
            barrier.wait()
            services.refund_create(payment=payment)
            outcomes.append("refunded")
        except RefundNotAllowed:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=refund) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refunded", "refused"]
    assert len(_stripe_refunds(stripe_env, payment)) == 1
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.REFUNDED


@pytest.mark.parametrize(("first", "status_after"), [(500, "succeeded"), (None, "partially_refunded")])
def test_refund_failed_after_success_restores_the_balance(
    stripe_env, first, status_after, django_capture_on_commit_callbacks
):
    from payments.gateway import get_gateway

    payment = _paid(stripe_env)
    kept = services.refund_create(payment=payment, amount=300) if first is None else None
    failing = services.refund_create(payment=payment, amount=first)  # the rest, or 5.00
    payment.refresh_from_db()
    assert payment.status in (PaymentStatus.REFUNDED, PaymentStatus.PARTIALLY_REFUNDED)
    failed = stripe_env.fail_refund(failing.stripe_refund_id)
    told = []

    def listen(sender, refund, **kwargs):
        told.append(refund.pk)

    payment_refund_failed.connect(listen)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            services.refund_sync(info=get_gateway().refund_from_object(failed))  # as refund.failed applies it
    finally:
        payment_refund_failed.disconnect(listen)
    assert told == [failing.pk]  # the host hears of it
    payment.refresh_from_db()
    assert payment.status == status_after
    assert payment.refundable_amount() == payment.total - (kept.amount if kept else 0)
    # An older refund.updated (succeeded) arriving late does not bring the failed refund back.
    stale = {**failed, "status": "succeeded"}
    services.refund_sync(info=get_gateway().refund_from_object(stale))
    assert Refund.objects.get(pk=failing.pk).status == RefundStatus.FAILED
    # What the failure gave back can be refunded again, and the emulator agrees.
    again = services.refund_create(payment=payment, amount=failing.amount)
    assert again.status == RefundStatus.SUCCEEDED


def test_emulator_refuses_more_than_is_left_and_bad_reasons(stripe_env):
    payment = _paid(stripe_env)
    intent = payment.stripe_payment_intent_id
    stripe_env.api("POST", "/v1/refunds", payment_intent=intent, amount=str(payment.total - 100))
    too_much = requests.post(
        f"{stripe_env.url}/v1/refunds",
        data={"payment_intent": intent, "amount": "101"},
        headers={"Authorization": "Bearer sk_test_suite"},
        timeout=5,
    )
    assert too_much.status_code == 400 and too_much.json()["error"]["code"] == "amount_too_large"
    bad_reason = requests.post(
        f"{stripe_env.url}/v1/refunds",
        data={"payment_intent": intent, "amount": "50", "reason": "changed_mind"},
        headers={"Authorization": "Bearer sk_test_suite"},
        timeout=5,
    )
    assert bad_reason.status_code == 400 and bad_reason.json()["error"]["param"] == "reason"
    stripe_env.api("POST", "/v1/refunds", payment_intent=intent, reason="requested_by_customer")
    again = requests.post(
        f"{stripe_env.url}/v1/refunds",
        data={"payment_intent": intent},
        headers={"Authorization": "Bearer sk_test_suite"},
        timeout=5,
    )
    assert again.json()["error"]["code"] == "charge_already_refunded"


def test_a_refund_given_up_on_that_reached_stripe_counts_when_stripe_says_so(stripe_env):
    from payments.gateway import get_gateway

    payment = _paid(stripe_env)
    stripe_env.slow_after_forward("POST", "/v1/refunds", delay=3, times=10)  # Stripe acts, we time out
    refund = services.refund_create(payment=payment, amount=500)
    assert refund.status == RefundStatus.PENDING and not refund.stripe_refund_id
    services.refund_give_up(refund_id=refund.pk, reason="no answer")
    assert Refund.objects.get(pk=refund.pk).status == RefundStatus.FAILED
    at_stripe = _stripe_refunds(stripe_env, payment)[0]  # refund.created, as its webhook brings it
    services.refund_sync(info=get_gateway().refund_from_object(at_stripe))
    assert Refund.objects.get(pk=refund.pk).status == RefundStatus.SUCCEEDED
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.PARTIALLY_REFUNDED
    assert Payment.objects.get(pk=payment.pk).refundable_amount() == payment.total - 500


def test_giving_up_never_overrides_what_stripe_said(stripe_env):
    payment = _paid(stripe_env)
    refund = services.refund_create(payment=payment, amount=500)
    assert refund.status == RefundStatus.SUCCEEDED
    services.refund_give_up(refund_id=refund.pk, reason="late task")
    assert Refund.objects.get(pk=refund.pk).status == RefundStatus.SUCCEEDED
