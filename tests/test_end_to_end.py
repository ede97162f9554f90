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


def test_an_event_the_site_could_not_store_is_delivered_again_and_confirms(
    stripe_env, live_server, celery_worker_thread, settings
):
    """The site answers 503 while its events table is locked; Stripe (the emulator) sends the
    event again later, and the booking is confirmed from that delivery."""
    import psycopg2
    from django.db import connection

    from stripe_emulator import strict

    settings.PAYMENTS = {**settings.PAYMENTS, "WEBHOOK_LOCK_TIMEOUT": 0.3}
    booking = BookingFactory()
    with (
        stripe_env.webhook_retries(first_delay=1.0),
        stripe_env.webhooks_to(f"{live_server.url}/api/webhooks/stripe/"),
    ):
        started = booking_pay(booking_id=booking.pk, payment_method_id=stripe_env.card())
        # Another transaction holds the events table: storing an event waits 0.3 s, then 503.
        blocker = psycopg2.connect(**connection.get_connection_params())
        try:
            with blocker.cursor() as cursor:
                cursor.execute("LOCK TABLE payments_webhookevent IN SHARE MODE")
            before = len(strict.DELIVERIES)
            stripe_env.api("POST", f"/v1/payment_intents/{started.intent.id}/confirm")
            wait_for(
                lambda: any(
                    d["type"] == "payment_intent.succeeded" and d["status"] == 503
                    for d in list(strict.DELIVERIES)[before:]
                ),
                message="the site to refuse the first delivery",
            )
            assert Booking.objects.get(pk=booking.pk).status == Booking.Status.PENDING
        finally:
            blocker.rollback()
            blocker.close()
        wait_for(
            lambda: Booking.objects.get(pk=booking.pk).status == Booking.Status.CONFIRMED,
            message="the booking to be confirmed by the event delivered again",
        )
    event = WebhookEvent.objects.get(
        type="payment_intent.succeeded", payload__data__object__id=started.intent.id
    )
    statuses = [d["status"] for d in stripe_env.deliveries(event.stripe_event_id) if d["endpoint"] == "tests"]
    # Refused while the table was locked (more than once on a slow machine), then delivered once.
    assert statuses[0] == 503 and statuses[-1] == 200 and statuses.count(200) == 1
