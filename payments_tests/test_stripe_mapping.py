"""The pure Stripe-object mappers (payments.gateway.stripe_objects) on Stripe's own example objects
(stripe_emulator/fixtures, from Stripe's OpenAPI fixtures): Stripe's words become the contract's
enums, and a word Stripe adds later acts on nothing."""

import json

import pytest

from payments.exceptions import WebhookPayloadError
from payments.gateway import stripe_objects
from payments.gateway.base import ChargeStatus, CheckoutPaymentStatus, CheckoutStatus
from payments.states import PaymentStatus, RefundStatus
from stripe_emulator.strict import stripe_object


def test_a_checkout_session():
    session = stripe_objects.checkout_info(stripe_object("checkout.session"))
    assert session.status is CheckoutStatus.OPEN
    assert session.payment_status is CheckoutPaymentStatus.UNPAID
    paid = stripe_objects.checkout_info(
        stripe_object("checkout.session", status="complete", payment_status="paid", payment_intent="pi_1")
    )
    assert (paid.status, paid.payment_status) == (CheckoutStatus.COMPLETE, CheckoutPaymentStatus.PAID)
    assert paid.intent_id == "pi_1"


def test_a_charge():
    charge = stripe_objects.charge_info(stripe_object("charge"))
    assert charge.status is ChargeStatus.SUCCEEDED and charge.paid
    assert charge.amount == stripe_object("charge")["amount"]


def test_a_charge_lists_its_refunds_only_when_the_list_is_whole():
    refund = stripe_object("refund", status="pending")
    whole = stripe_objects.charge_info(
        stripe_object("charge", refunds={"object": "list", "data": [refund], "has_more": False})
    )
    assert [(r.id, r.status) for r in whole.refunds] == [(refund["id"], RefundStatus.PENDING)]
    cut = stripe_objects.charge_info(
        stripe_object("charge", refunds={"object": "list", "data": [refund], "has_more": True})
    )
    assert cut.refunds is None  # a cut list says nothing about the refunds it left out


@pytest.mark.parametrize(
    ("status", "ours"),
    [("won", True), ("warning_closed", True), ("lost", False), ("needs_response", False)],
)
def test_a_dispute_says_whether_it_closed_in_our_favour(status, ours):
    dispute = stripe_objects.dispute_info(stripe_object("dispute", status=status))
    assert dispute.closed_in_our_favour is ours
    assert dispute.status == status  # Stripe's own word, kept for staff


@pytest.mark.parametrize(
    ("stripe_status", "error", "ours"),
    [
        ("requires_payment_method", None, PaymentStatus.CREATED),
        (
            "requires_payment_method",
            {"code": "card_declined", "decline_code": "generic_decline"},
            PaymentStatus.FAILED,
        ),
        ("requires_confirmation", None, PaymentStatus.CREATED),
        ("requires_action", None, PaymentStatus.REQUIRES_ACTION),
        ("processing", None, PaymentStatus.PROCESSING),
        ("requires_capture", None, PaymentStatus.PROCESSING),
        ("succeeded", None, PaymentStatus.SUCCEEDED),
        ("canceled", None, PaymentStatus.CANCELED),
        ("a_status_stripe_adds_later", None, PaymentStatus.PROCESSING),
    ],
)
def test_a_payment_intent(stripe_status, error, ours):
    intent = stripe_objects.intent_info(
        stripe_object("payment_intent", status=stripe_status, last_payment_error=error)
    )
    assert intent.status is ours
    assert intent.provider_status == stripe_status
    if error:
        assert (intent.error_code, intent.decline_code) == ("card_declined", "generic_decline")


def test_a_payment_intent_reads_its_card_from_the_expanded_method_or_charge():
    method = stripe_object("payment_method")
    charge = stripe_object("charge", amount_refunded=300)
    intent = stripe_objects.intent_info(
        stripe_object("payment_intent", status="succeeded", payment_method=method, latest_charge=charge)
    )
    assert (intent.payment_method_id, intent.charge_id) == (method["id"], charge["id"])
    assert (intent.card_brand, intent.card_last4) == ("visa", "4242")
    assert intent.amount_refunded == 300
    unexpanded = stripe_objects.intent_info(
        stripe_object("payment_intent", payment_method="pm_1", latest_charge="ch_1")
    )
    assert (unexpanded.payment_method_id, unexpanded.charge_id, unexpanded.amount_refunded) == (
        "pm_1",
        "ch_1",
        None,
    )


@pytest.mark.parametrize(
    ("stripe_status", "ours"),
    [
        ("pending", RefundStatus.PENDING),
        ("requires_action", RefundStatus.REQUIRES_ACTION),
        ("succeeded", RefundStatus.SUCCEEDED),
        ("failed", RefundStatus.FAILED),
        ("canceled", RefundStatus.CANCELED),
        # Unknown words still hold the money until Stripe says where it went.
        ("a_status_stripe_adds_later", RefundStatus.PENDING),
    ],
)
def test_a_refund(stripe_status, ours):
    refund = stripe_objects.refund_info(stripe_object("refund", status=stripe_status))
    assert refund.status is ours
    assert refund.amount == stripe_object("refund")["amount"]


def test_a_payment_method():
    method = stripe_objects.payment_method_info(stripe_object("payment_method", customer="cus_1"))
    assert (method.brand, method.last4, method.exp_month, method.exp_year) == ("visa", "4242", 8, 2030)
    assert method.customer_id == "cus_1"


def test_an_event_keeps_its_payload_whole():
    raw = stripe_object("event")
    event = stripe_objects.event_info(raw)
    assert (event.id, event.type) == (raw["id"], "plan.created")
    assert event.object == raw["data"]["object"]
    assert event.raw is raw


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        json.dumps({"type": "x", "data": {"object": {}}}).encode(),
        json.dumps({"id": "evt_1", "data": {"object": {}}}).encode(),
        json.dumps({"id": "evt_1", "type": "x", "data": {}}).encode(),
        json.dumps({"id": "e" * 256, "type": "x", "data": {"object": {}}}).encode(),
    ],
)
def test_a_signed_body_must_still_look_like_an_event(body):
    with pytest.raises(WebhookPayloadError):
        stripe_objects.event_body(body)


def test_a_word_stripe_adds_later_acts_on_nothing():
    session = stripe_objects.checkout_info(
        stripe_object("checkout.session", status="paused", payment_status="partially_paid")
    )
    assert (session.status, session.payment_status) == (CheckoutStatus.OPEN, CheckoutPaymentStatus.UNPAID)
    assert (
        stripe_objects.charge_info(stripe_object("charge", status="disputed")).status is ChargeStatus.PENDING
    )
