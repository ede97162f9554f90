"""Stripe misbehaving: 5xx, 409, 429, timeouts and resets never make a second charge."""

import threading

import pytest
from django.db import connection

from bookings.services import booking_pay
from payments import services
from payments.exceptions import ProviderError, ProviderUnavailable
from payments.models import Payment
from payments.states import PaymentStatus
from tests.factories import BookingFactory

pytestmark = [pytest.mark.django_db, pytest.mark.emulator]


def _intents(stripe):
    return stripe.api("GET", "/v1/payment_intents")["data"]


def _create_calls(stripe):
    return stripe.calls("POST", "/v1/payment_intents")


@pytest.mark.parametrize(
    ("status", "headers"),
    [(500, {}), (503, {}), (409, {}), (429, {"Stripe-Should-Retry": "true"})],
)
def test_retryable_answer_then_success_creates_one_intent(stripe_env, status, headers):
    stripe_env.fail("POST", "/v1/payment_intents", status=status, headers=headers)
    result = booking_pay(booking_id=BookingFactory().pk)
    assert result.intent.id
    assert len(_intents(stripe_env)) == 1
    creates = [c for c in _create_calls(stripe_env) if c.path == "/v1/payment_intents"]
    assert len(creates) == 2
    assert len({c.idempotency_key for c in creates}) == 1


def test_timeout_after_stripe_acted_then_success(stripe_env):
    stripe_env.slow_after_forward("POST", "/v1/payment_intents", delay=2.5)
    result = booking_pay(booking_id=BookingFactory().pk)
    assert len(_intents(stripe_env)) == 1
    creates = [c for c in _create_calls(stripe_env) if c.path == "/v1/payment_intents"]
    assert [c.replayed for c in creates] == [False, True]
    assert len({c.idempotency_key for c in creates}) == 1
    assert result.payment.stripe_payment_intent_id == _intents(stripe_env)[0]["id"]


def test_reset_after_confirm_was_forwarded_charges_once(stripe_env):
    booking = BookingFactory()
    started = booking_pay(booking_id=booking.pk)
    stripe_env.reset_after_forward("POST", f"/v1/payment_intents/{started.intent.id}/confirm")
    card = stripe_env.card()
    result = booking_pay(booking_id=booking.pk, payment_method_id=card, confirm=True)
    assert result.payment.status == PaymentStatus.SUCCEEDED
    charges = stripe_env.api("GET", "/v1/charges")["data"]
    assert len(charges) == 1
    confirms = stripe_env.calls("POST", f"/v1/payment_intents/{started.intent.id}/confirm")
    assert len(confirms) == 2 and len({c.idempotency_key for c in confirms}) == 1


def test_plain_429_is_a_retryable_error(stripe_env):
    stripe_env.fail(
        "POST",
        "/v1/payment_intents",
        status=429,
        body={"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many"}},
    )
    booking = BookingFactory()
    with pytest.raises(ProviderUnavailable) as info:
        booking_pay(booking_id=booking.pk)
    assert info.value.retryable and info.value.http_status == 503
    assert len(_create_calls(stripe_env)) == 1  # the SDK does not retry a plain 429
    # The caller tries again later: same attempt, same key, one intent.
    booking_pay(booking_id=booking.pk)
    assert len(_intents(stripe_env)) == 1
    assert Payment.objects.filter(object_id=str(booking.pk)).count() == 1


def test_stripe_down_exhausts_the_bounded_retries(stripe_env, settings):
    stripe_env.fail("POST", "/v1/payment_intents", status=500, times=10)
    with pytest.raises(ProviderUnavailable):
        booking_pay(booking_id=BookingFactory().pk)
    assert len(_create_calls(stripe_env)) == 1 + settings.PAYMENTS.get("RETRY_ATTEMPTS", 3)


def test_should_retry_false_is_not_retried(stripe_env):
    stripe_env.fail("POST", "/v1/payment_intents", status=500, headers={"Stripe-Should-Retry": "false"})
    with pytest.raises(ProviderError):
        booking_pay(booking_id=BookingFactory().pk)
    assert len(_create_calls(stripe_env)) == 1


def test_bad_request_is_not_retried_and_says_nothing_raw(stripe_env):
    with pytest.raises(ProviderError) as info:
        booking_pay(booking_id=BookingFactory().pk, payment_method_id="pm_does_not_exist", confirm=True)
    assert not info.value.retryable
    assert "pm_does_not_exist" not in info.value.message


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_starts_make_one_intent(stripe_env):
    booking = BookingFactory()
    barrier = threading.Barrier(10)
    secrets: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def start():
        try:
            barrier.wait()
            result = booking_pay(booking_id=booking.pk)
            with lock:
                secrets.append(result.intent.client_secret)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=start) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(secrets) == 10 and len(set(secrets)) == 1
    assert len(_intents(stripe_env)) == 1
    assert Payment.objects.filter(object_id=str(booking.pk)).count() == 1


def test_calls_inside_a_request_fit_its_budget(stripe_env, settings):
    """A stalled Stripe: the request answers 503 within its budget instead of 4 × the timeout."""
    import time

    from rest_framework.test import APIClient

    settings.PAYMENTS = {**settings.PAYMENTS, "TIMEOUT": 2.0, "REQUEST_BUDGET": 1.5}
    booking = BookingFactory()
    client = APIClient()
    client.force_authenticate(booking.user)
    stripe_env.slow_after_forward("POST", "/v1/customers", delay=3, times=10)
    started = time.monotonic()
    response = client.post(f"/api/bookings/{booking.pk}/payment/intent/", {}, format="json")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert elapsed < 2.5, f"the request took {elapsed:.1f}s with a 1.5s budget"
    assert len(stripe_env.calls("POST", "/v1/customers")) == 1  # no retry that could not finish


def test_confirm_after_the_intent_could_not_be_created_starts_it(stripe_env, client):
    """Stripe was down while the intent was made: the booker's "try again" (a confirm with the
    card) creates it with the attempt's key and charges once; never a 409 for good."""
    booking = BookingFactory()
    card = stripe_env.card()
    stripe_env.fail("POST", "/v1/payment_intents", status=500, times=10)
    client.force_login(booking.user)
    url = f"/api/bookings/{booking.pk}/payment"
    down = client.post(
        f"{url}/intent/", {"payment_method_id": card, "confirm_immediately": True}, "application/json"
    )
    assert down.status_code == 503
    payment = Payment.objects.get(object_id=str(booking.pk))
    assert payment.status == PaymentStatus.CREATED and not payment.stripe_payment_intent_id
    stripe_env.faults.clear()

    again = client.post(f"{url}/confirm/", {"payment_method_id": card}, "application/json")

    assert again.status_code == 200, again.content
    assert again.json()["payment"]["status"] == PaymentStatus.SUCCEEDED
    assert len(_intents(stripe_env)) == 1
    assert Payment.objects.filter(object_id=str(booking.pk)).count() == 1


def test_confirm_of_an_unstarted_attempt_still_asks_the_host(stripe_env, client):
    """The retried start goes through the host's checks: a hold that ran out is not charged."""
    from django.utils import timezone

    booking = BookingFactory()
    card = stripe_env.card()
    stripe_env.fail("POST", "/v1/payment_intents", status=500, times=10)
    client.force_login(booking.user)
    url = f"/api/bookings/{booking.pk}/payment"
    client.post(
        f"{url}/intent/", {"payment_method_id": card, "confirm_immediately": True}, "application/json"
    )
    stripe_env.faults.clear()
    type(booking).objects.filter(pk=booking.pk).update(expires_at=timezone.now())

    late = client.post(f"{url}/confirm/", {"payment_method_id": card}, "application/json")

    assert late.status_code == 409
    assert _intents(stripe_env) == []


@pytest.mark.parametrize("code", ["lock_timeout", "idempotency_key_in_use"])
def test_a_conflict_that_outlasts_the_retries_says_try_again(stripe_env, code):
    """Stripe's 409s clear by themselves: after the last retry the booker hears "try again"
    (503 in the envelope), never a bad-gateway error."""
    body = {"error": {"type": "invalid_request_error", "code": code, "message": "Conflict."}}
    stripe_env.fail("POST", "/v1/payment_intents", status=409, body=body, times=10)
    with pytest.raises(ProviderUnavailable) as raised:
        booking_pay(booking_id=BookingFactory().pk)
    assert raised.value.http_status == 503 and raised.value.retryable
    assert raised.value.code == "provider_busy"


def test_a_confirm_that_meets_stripes_lock_reports_the_first_clicks_success(stripe_env):
    """The second click's confirm gets 409 lock_timeout while the first click's confirm charges:
    the answer is the intent as it is (succeeded), not "try again"."""
    booking = BookingFactory()
    started = booking_pay(booking_id=booking.pk, payment_method_id=stripe_env.card())
    intent_id = started.intent.id
    stripe_env.api("POST", f"/v1/payment_intents/{intent_id}/confirm")  # the first click, at Stripe
    busy = {"error": {"type": "invalid_request_error", "code": "lock_timeout", "message": "Locked."}}
    stripe_env.fail("POST", f"/v1/payment_intents/{intent_id}/confirm", status=409, body=busy, times=10)

    result = services.payment_confirm(payment=started.payment)

    assert result.payment.status == PaymentStatus.SUCCEEDED
