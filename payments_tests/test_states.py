"""Payment status transitions: every allowed move works, every other raises and changes nothing."""

import itertools

import pytest

from payments.exceptions import IllegalTransition
from payments.models import Payment
from payments.services import payment_transition
from payments.states import (
    PAYMENT_TRANSITIONS,
    REFUND_HOLDS_MONEY,
    REFUND_TRANSITIONS,
    PaymentStatus,
    RefundStatus,
    refund_can_move,
)
from payments_tests.factories import PaymentFactory

ALL_PAIRS = list(itertools.product(PaymentStatus.values, PaymentStatus.values))
ALLOWED = [(a, b) for a, b in ALL_PAIRS if b in PAYMENT_TRANSITIONS[a]]
REFUSED = [(a, b) for a, b in ALL_PAIRS if b not in PAYMENT_TRANSITIONS[a]]


def test_table_covers_every_status():
    assert set(PAYMENT_TRANSITIONS) == set(PaymentStatus.values)
    S = PaymentStatus
    # The rules the table encodes, each checked on its own:
    assert not PAYMENT_TRANSITIONS[S.REFUNDED], "a refunded payment never moves by an event"
    for status in S.values:
        assert status not in PAYMENT_TRANSITIONS[status], f"{status} -> itself is not a move"
    paid = {S.SUCCEEDED, S.PARTIALLY_REFUNDED, S.REFUNDED, S.DISPUTED}
    for status in paid:
        back = PAYMENT_TRANSITIONS[status] - paid
        assert not back, f"a paid payment never goes back to unpaid: {status} -> {back}"
    for status in (S.CREATED, S.REQUIRES_ACTION, S.PROCESSING, S.FAILED, S.CANCELED):
        assert S.SUCCEEDED in PAYMENT_TRANSITIONS[status], f"money may arrive for {status}"
    assert PAYMENT_TRANSITIONS[S.CANCELED] == {S.SUCCEEDED}, "a canceled attempt only ever gets paid"


@pytest.mark.django_db
@pytest.mark.parametrize(("current", "target"), ALLOWED)
def test_allowed_transition(current, target):
    payment = PaymentFactory(status=current)
    payment_transition(payment=payment, status=target)
    assert Payment.objects.get(pk=payment.pk).status == target


@pytest.mark.django_db
@pytest.mark.parametrize(("current", "target"), REFUSED)
def test_refused_transition_changes_nothing(current, target):
    payment = PaymentFactory(status=current)
    before = Payment.objects.filter(pk=payment.pk).values().get()
    with pytest.raises(IllegalTransition):
        payment_transition(payment=payment, status=target)
    assert Payment.objects.filter(pk=payment.pk).values().get() == before


@pytest.mark.django_db
def test_succeeded_never_goes_back():
    payment = PaymentFactory(status=PaymentStatus.SUCCEEDED)
    for target in (PaymentStatus.CREATED, PaymentStatus.PROCESSING, PaymentStatus.FAILED):
        with pytest.raises(IllegalTransition):
            payment_transition(payment=payment, status=target)


def test_refund_lifecycle():
    R = RefundStatus
    assert set(REFUND_TRANSITIONS) == set(R.values)
    for settled in (R.SUCCEEDED, R.FAILED, R.CANCELED):
        for waiting in (R.PENDING, R.REQUIRES_ACTION):
            assert not refund_can_move(settled, waiting, known_to_provider=True), "settled stays settled"
    assert refund_can_move(R.SUCCEEDED, R.FAILED, known_to_provider=True), "refund.failed after success"
    for final in (R.FAILED, R.CANCELED):
        assert not any(refund_can_move(final, t, known_to_provider=True) for t in R.values)
        # Given up on before Stripe answered: Stripe may have made it after all.
        assert refund_can_move(final, R.SUCCEEDED, known_to_provider=False)
        assert not refund_can_move(final, R.PENDING, known_to_provider=False)
    assert {R.PENDING, R.REQUIRES_ACTION, R.SUCCEEDED} == REFUND_HOLDS_MONEY
