"""The one rule for asking for a refund (services.refund_request), as the API and hosts use it."""

from datetime import timedelta

import pytest
from django.utils import timezone

from payments import services
from payments.exceptions import RefundNotAllowed
from payments.models import Refund
from payments_tests.factories import PaymentFactory, UserFactory

pytestmark = pytest.mark.django_db


def _paid():
    return PaymentFactory(status="succeeded", stripe_payment_intent_id="pi_rule", subtotal=2500)


def test_the_owner_may_not_refund_after_the_window():
    payment = _paid()
    soon = timezone.now() + timedelta(hours=1)  # REFUND_CUTOFF is 24 hours
    with pytest.raises(RefundNotAllowed) as refused:
        services.refund_request(payment=payment, user=payment.owner, deadline=soon)
    assert refused.value.code == "refund_window_closed"
    assert not Refund.objects.exists()


def test_nobody_else_may_refund_without_the_permission():
    payment = _paid()
    with pytest.raises(RefundNotAllowed):
        services.refund_request(payment=payment, user=UserFactory(), deadline=None)


def test_never_more_than_is_left():
    payment = _paid()
    with pytest.raises(RefundNotAllowed) as refused:
        services.refund_request(payment=payment, user=payment.owner, amount=2501)
    assert "25.00" in refused.value.message
    assert not Refund.objects.exists()


@pytest.mark.emulator
def test_the_owner_refunds_within_the_window(stripe_env):
    from payments_tests.donations.views import donation_terms
    from payments_tests.factories import DonationFactory
    from payments_tests.test_donations import GOOD  # the same card the flows use

    donation = DonationFactory(amount=2500)
    payment = services.payment_start(
        terms=donation_terms(donation), payment_method_id=stripe_env.card(GOOD), confirm=True
    ).payment
    far = timezone.now() + timedelta(days=3)
    refund = services.refund_request(payment=payment, user=donation.donor, deadline=far)
    assert (refund.amount, refund.status, refund.requested_by) == (2500, "succeeded", donation.donor)
