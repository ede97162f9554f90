"""factory-boy factories for users, donations and their payments."""

import factory
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType

from payments.models import Payment
from payments_tests.donations.models import Donation


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("pass-word-123")


class DonationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Donation

    donor = factory.SubFactory(UserFactory)
    amount = 5000


class PaymentFactory(factory.django.DjangoModelFactory):
    """A payment row as the services leave it; `payable` defaults to a new donation."""

    class Meta:
        model = Payment
        exclude = ("payable",)

    payable = factory.SubFactory(DonationFactory)
    content_type = factory.LazyAttribute(lambda p: ContentType.objects.get_for_model(p.payable))
    object_id = factory.LazyAttribute(lambda p: str(p.payable.pk))
    owner = factory.LazyAttribute(lambda p: getattr(p.payable, "user", None) or p.payable.donor)
    subtotal = factory.LazyAttribute(lambda p: getattr(p.payable, "amount", 2000))
    fee = 0
    total = factory.LazyAttribute(lambda p: p.subtotal + p.fee)
    currency = "usd"
    idempotency_key = factory.Sequence(lambda n: f"test-payment-{n}")
