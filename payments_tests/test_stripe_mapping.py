"""The Stripe gateway's mappers, on Stripe's own example objects (stripe_emulator/fixtures, from
Stripe's OpenAPI fixtures): Stripe's words become the contract's enums, unknown words act on nothing."""

import pytest

from payments.gateway.base import ChargeStatus, CheckoutPaymentStatus, CheckoutStatus
from payments.gateway.stripe import StripeGateway
from stripe_emulator.strict import stripe_object

gateway = StripeGateway()


def test_a_checkout_session():
    session = gateway.checkout_from_object(stripe_object("checkout.session"))
    assert session.status is CheckoutStatus.OPEN
    assert session.payment_status is CheckoutPaymentStatus.UNPAID
    paid = gateway.checkout_from_object(
        stripe_object("checkout.session", status="complete", payment_status="paid")
    )
    assert (paid.status, paid.payment_status) == (CheckoutStatus.COMPLETE, CheckoutPaymentStatus.PAID)


def test_a_charge():
    charge = gateway.charge_from_object(stripe_object("charge"))
    assert charge.status is ChargeStatus.SUCCEEDED and charge.paid
    assert charge.amount == stripe_object("charge")["amount"]


@pytest.mark.parametrize(
    ("status", "ours"),
    [("won", True), ("warning_closed", True), ("lost", False), ("needs_response", False)],
)
def test_a_dispute_says_whether_it_closed_in_our_favour(status, ours):
    dispute = gateway.dispute_from_object(stripe_object("dispute", status=status))
    assert dispute.closed_in_our_favour is ours
    assert dispute.status == status  # Stripe's own word, kept for staff


def test_a_word_stripe_adds_later_acts_on_nothing():
    session = gateway.checkout_from_object(
        stripe_object("checkout.session", status="paused", payment_status="partially_paid")
    )
    assert (session.status, session.payment_status) == (CheckoutStatus.OPEN, CheckoutPaymentStatus.UNPAID)
    assert (
        gateway.charge_from_object(stripe_object("charge", status="disputed")).status is ChargeStatus.PENDING
    )
