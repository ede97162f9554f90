"""factory-boy factories for events, bookings and their payments (users and donations come from
the payments app's own test factories)."""

from datetime import timedelta

import factory
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from bookings.models import Booking, Event
from payments.models import Payment
from payments_tests import factories as payments_factories
from payments_tests.factories import UserFactory


class EventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Event

    title = factory.Sequence(lambda n: f"Concert {n}")
    venue = "Town Hall"
    starts_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=7))
    price = 2000
    currency = "usd"
    capacity = 50
    host = factory.SubFactory(UserFactory)


class BookingFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Booking

    user = factory.SubFactory(UserFactory)
    event = factory.SubFactory(EventFactory)
    quantity = 1
    subtotal = factory.LazyAttribute(lambda b: b.event.price * b.quantity)
    fee = factory.LazyAttribute(lambda b: round(b.subtotal * 3 / 100))
    total = factory.LazyAttribute(lambda b: b.subtotal + b.fee)
    currency = factory.LazyAttribute(lambda b: b.event.currency)
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(minutes=15))


class PaymentFactory(payments_factories.PaymentFactory):
    """A payment row as the services leave it; `payable` defaults to a new booking."""

    payable = factory.SubFactory(BookingFactory)
    subtotal = factory.LazyAttribute(lambda p: getattr(p.payable, "subtotal", 2000))
    fee = factory.LazyAttribute(lambda p: getattr(p.payable, "fee", 60))


def bulk_paid_payments(count: int, *, owners, intent_ids=None, prefix: str = "bulk") -> None:
    """Insert `count` paid booking payments at once (for the tests that need thousands)."""
    content_type = ContentType.objects.get_for_model(Booking)
    Payment.objects.bulk_create(
        [
            Payment(
                content_type=content_type,
                object_id=str(10**7 + i),
                owner=owners[i % len(owners)],
                subtotal=2000,
                fee=60,
                total=2060,
                currency="usd",
                status="succeeded",
                attempt=1,
                idempotency_key=f"{prefix}-{i}",
                stripe_payment_intent_id=intent_ids[i] if intent_ids else f"pi_{prefix}_{i}",
                description=f"booking {i}",
            )
            for i in range(count)
        ],
        batch_size=10_000,
    )
