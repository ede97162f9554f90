"""End to end: the emulator's own signed webhook reaches the running site, a real worker confirms."""

import pytest

from bookings.models import Booking
from bookings.services import booking_pay
from payments.models import Payment, WebhookEvent
from tests.conftest import wait_for
from tests.factories import BookingFactory

pytestmark = [pytest.mark.emulator, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_emulator_webhook_confirms_the_booking(stripe_env, live_server, celery_worker_thread):
    booking = BookingFactory()
    with stripe_env.webhooks_to(f"{live_server.url}/api/webhooks/stripe/"):
        started = booking_pay(booking_id=booking.pk, payment_method_id=stripe_env.card())
        assert started.payment.status == "created"
        # The browser confirms with Stripe.js: our server hears of it only through the webhook.
        stripe_env.api("POST", f"/v1/payment_intents/{started.intent.id}/confirm")
        wait_for(
            lambda: Booking.objects.get(pk=booking.pk).status == Booking.Status.CONFIRMED,
            message="the booking to be confirmed by the processed webhook",
        )
        # charge.succeeded may confirm it first (Stripe sends both): each is processed once.
        events = WebhookEvent.objects.filter(payload__data__object__payment_intent=started.intent.id)
        wait_for(
            lambda: WebhookEvent.objects.filter(
                type="payment_intent.succeeded",
                payload__data__object__id=started.intent.id,
                status="processed",
            ).exists()
            and not events.exclude(status="processed").exists(),
            message="every event about the payment to be processed",
        )
    event = WebhookEvent.objects.get(
        type="payment_intent.succeeded", payload__data__object__id=started.intent.id
    )
    assert event.status == "processed" and event.attempts == 1
    payment = Payment.objects.get(object_id=str(booking.pk))
    assert payment.status == "succeeded"
