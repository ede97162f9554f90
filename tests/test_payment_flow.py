"""Paying through the services against the Stripe emulator: cards, 3-D Secure, declines, retries."""

import pytest

from bookings.models import Booking
from bookings.services import booking_pay
from payments import services
from payments.exceptions import CardError, IllegalTransition
from payments.models import Customer, Installation, Payment
from payments.states import PaymentStatus
from tests.factories import BookingFactory, EventFactory

pytestmark = [pytest.mark.django_db, pytest.mark.emulator]

CARD_OK = "4242424242424242"
CARD_3DS = "4000002500003155"
CARD_DECLINED = "4000000000000341"


def _pay(booking, stripe, number, django_capture_on_commit_callbacks=None):
    return booking_pay(booking_id=booking.pk, payment_method_id=stripe.card(number), confirm=True)


def test_card_payment_succeeds_end_to_end(stripe_env, django_capture_on_commit_callbacks):
    booking = BookingFactory()
    with django_capture_on_commit_callbacks(execute=True):
        result = _pay(booking, stripe_env, CARD_OK)
    payment = Payment.objects.get(pk=result.payment.pk)
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.stripe_charge_id.startswith("ch_")
    assert payment.card_last4 == "4242" and payment.card_brand
    assert payment.stripe_customer_id.startswith("cus_")
    intent = stripe_env.api("GET", f"/v1/payment_intents/{payment.stripe_payment_intent_id}")
    assert intent["status"] == "succeeded"
    assert intent["amount"] == booking.total == 2060
    assert intent["metadata"] == {
        "installation": Installation.current_id(),
        "payment_uid": str(payment.uid),
        "payment_id": str(payment.pk),
        "payable": f"bookings.booking:{booking.pk}",
    }
    assert Booking.objects.get(pk=booking.pk).status == Booking.Status.CONFIRMED


def test_every_write_carries_a_derived_idempotency_key(stripe_env):
    booking = BookingFactory()
    result = _pay(booking, stripe_env, CARD_OK)
    writes = stripe_env.calls("POST")
    assert writes and all(call.idempotency_key for call in writes)
    key = result.payment.idempotency_key
    # Unique to this installation (a UUID made with the row), stable for the operation.
    assert key == f"payment:{result.payment.uid}"
    customer = Customer.objects.get(user=booking.user)
    assert {c.idempotency_key for c in writes} == {
        f"customer:{customer.uid}",
        f"{key}:create:{writes[1].params['payment_method']}",
        f"{key}:confirm:1",
    }


def test_three_d_secure_then_success(stripe_env):
    booking = BookingFactory()
    result = _pay(booking, stripe_env, CARD_3DS)
    assert result.payment.status == PaymentStatus.REQUIRES_ACTION
    assert result.intent.next_action["type"] == "use_stripe_sdk"
    stripe_env.authenticate(result.intent.id, result.intent.client_secret, success=True)
    status = services.payment_confirm(payment=result.payment)  # the page asks again after 3-D Secure
    assert status.payment.status == PaymentStatus.SUCCEEDED


def test_three_d_secure_failure_fails_the_payment(stripe_env):
    booking = BookingFactory()
    result = _pay(booking, stripe_env, CARD_3DS)
    stripe_env.authenticate(result.intent.id, result.intent.client_secret, success=False)
    status = services.payment_confirm(payment=result.payment)
    assert status.payment.status == PaymentStatus.FAILED
    assert status.payment.last_error_code == "payment_intent_authentication_failure"


def test_declined_card_records_the_code(stripe_env):
    booking = BookingFactory()
    with pytest.raises(CardError) as info:
        _pay(booking, stripe_env, CARD_DECLINED)
    assert info.value.code == "card_declined"
    assert info.value.http_status == 402
    payment = Payment.objects.get(object_id=str(booking.pk))
    assert payment.status == PaymentStatus.FAILED
    assert payment.last_error_code == "card_declined"
    assert payment.last_error_message


def test_retry_after_decline_uses_a_new_attempt(stripe_env):
    booking = BookingFactory()
    with pytest.raises(CardError):
        _pay(booking, stripe_env, CARD_DECLINED)
    failed = Payment.objects.get(object_id=str(booking.pk))
    result = services.payment_retry(payment=failed, payment_method_id=stripe_env.card(CARD_OK))
    assert result.payment.attempt == 2
    assert result.payment.status == PaymentStatus.SUCCEEDED
    failed.refresh_from_db()
    assert failed.status == PaymentStatus.CANCELED
    old = stripe_env.api("GET", f"/v1/payment_intents/{failed.stripe_payment_intent_id}")
    assert old["status"] == "canceled"


def test_retry_refuses_a_payment_that_did_not_fail(stripe_env):
    result = _pay(BookingFactory(), stripe_env, CARD_OK)
    with pytest.raises(IllegalTransition):
        services.payment_retry(payment=result.payment, payment_method_id=stripe_env.card(CARD_OK))


def test_double_start_returns_the_same_intent(stripe_env):
    booking = BookingFactory()
    first = booking_pay(booking_id=booking.pk)
    second = booking_pay(booking_id=booking.pk)
    assert first.payment.pk == second.payment.pk
    assert first.intent.client_secret == second.intent.client_secret
    assert len(stripe_env.api("GET", "/v1/payment_intents")["data"]) == 1


def test_paid_booking_cannot_be_paid_again(stripe_env):
    booking = BookingFactory()
    _pay(booking, stripe_env, CARD_OK)
    Booking.objects.filter(pk=booking.pk).update(status=Booking.Status.PENDING)  # a stale page
    with pytest.raises(IllegalTransition) as info:
        booking_pay(booking_id=booking.pk)
    assert info.value.code == "already_paid"


def test_cancel_an_open_attempt(stripe_env):
    booking = BookingFactory()
    started = booking_pay(booking_id=booking.pk)
    payment = services.payment_cancel(payment=started.payment)
    assert payment.status == PaymentStatus.CANCELED
    assert stripe_env.api("GET", f"/v1/payment_intents/{started.intent.id}")["status"] == "canceled"


def test_cancel_refuses_a_paid_payment(stripe_env):
    result = _pay(BookingFactory(), stripe_env, CARD_OK)
    with pytest.raises(IllegalTransition):
        services.payment_cancel(payment=result.payment)


def test_jpy_amount_reaches_stripe_unscaled(stripe_env):
    booking = BookingFactory(event=EventFactory(price=1500, currency="jpy"), currency="jpy")
    result = _pay(booking, stripe_env, CARD_OK)
    intent = stripe_env.api("GET", f"/v1/payment_intents/{result.intent.id}")
    assert (intent["amount"], intent["currency"]) == (1545, "jpy")


def test_fee_is_included_in_the_charged_total(stripe_env):
    booking = BookingFactory(quantity=3)  # 3 × 20.00 + 3 % = 61.80
    result = _pay(booking, stripe_env, CARD_OK)
    assert stripe_env.api("GET", f"/v1/payment_intents/{result.intent.id}")["amount"] == 6180


def test_customer_is_created_once(stripe_env):
    booking = BookingFactory()
    other = BookingFactory(user=booking.user)
    booking_pay(booking_id=booking.pk)
    booking_pay(booking_id=other.pk)
    assert Customer.objects.filter(user=booking.user).count() == 1
    assert len(stripe_env.calls("POST", "/v1/customers")) == 1


def test_save_card_is_asked_of_stripe(stripe_env):
    booking = BookingFactory()
    booking_pay(booking_id=booking.pk, save_payment_method=True)
    create = stripe_env.calls("POST", "/v1/payment_intents")[0]
    assert create.params["setup_future_usage"] == "off_session"
    assert create.params["payment_method_types"] == ["card"]


def test_saved_cards_list_and_detach(stripe_env):
    booking = BookingFactory()
    customer = services.customer_get_or_create(user=booking.user)
    card = stripe_env.card(CARD_OK)
    stripe_env.api("POST", f"/v1/payment_methods/{card}/attach", customer=customer.stripe_customer_id)
    cards = services.payment_methods_list(user=booking.user)
    assert [(c.id, c.last4) for c in cards] == [(card, "4242")]
    stranger = BookingFactory().user
    with pytest.raises(Exception) as info:
        services.payment_method_detach(user=stranger, payment_method_id=card)
    assert getattr(info.value, "code", "") == "not_found"
    services.payment_method_detach(user=booking.user, payment_method_id=card)
    assert services.payment_methods_list(user=booking.user) == []


def test_setup_intent_for_saving_a_card(stripe_env):
    user = BookingFactory().user
    first = services.setup_intent_create(user=user)
    second = services.setup_intent_create(user=user)
    assert first.client_secret and first.id != second.id
    keys = [c.idempotency_key for c in stripe_env.calls("POST", "/v1/setup_intents")]
    assert len(set(keys)) == 2


def test_checkout_session(stripe_env, django_capture_on_commit_callbacks):
    from bookings.services import booking_checkout

    booking = BookingFactory()
    payment, session = booking_checkout(
        booking_id=booking.pk,
        success_url="http://x/ok?session_id={CHECKOUT_SESSION_ID}",
        cancel_url="http://x/no",
    )
    assert session.url and session.status == "open"
    params = stripe_env.calls("POST", "/v1/checkout/sessions")[0].params
    assert params["client_reference_id"] == str(payment.uid)
    assert params["line_items"][0]["price_data"]["unit_amount"] == str(booking.total)
    again, same = booking_checkout(booking_id=booking.pk, success_url="http://x/ok", cancel_url="http://x/no")
    assert (again.pk, same.id) == (payment.pk, session.id)
    paid = stripe_env.complete_checkout(session.id)
    from payments.gateway import get_gateway

    with django_capture_on_commit_callbacks(execute=True):
        services.payment_sync_checkout(session=get_gateway().checkout_from_object(paid))
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.stripe_payment_intent_id == paid["payment_intent"]
    assert Booking.objects.get(pk=booking.pk).status == Booking.Status.CONFIRMED


def test_a_new_attempt_is_made_for_its_payers_customer_and_a_resumed_one_for_the_new_payers(stripe_env):
    """The payer's customer is read with the payable's lock and kept on the attempt; resuming
    someone else's attempt (a host whose payables several users may pay) uses the resumer's."""
    from tests.factories import PaymentFactory, UserFactory

    booking = BookingFactory()
    first = services.payment_start(terms=_terms(booking, booking.user)).payment
    own = services.customer_get_or_create(user=booking.user).stripe_customer_id
    assert Payment.objects.get(pk=first.pk).stripe_customer_id == own
    assert services.payment_start(terms=_terms(booking, booking.user)).payment.pk == first.pk  # resumed
    # An attempt whose intent was never made (Stripe was down), left by its first payer.
    other_booking = BookingFactory()
    left = PaymentFactory(payable=other_booking, owner=other_booking.user, stripe_customer_id=own)
    resumer = UserFactory()
    resumed = services.payment_start(terms=_terms(other_booking, resumer))
    assert resumed.payment.pk == left.pk
    theirs = services.customer_get_or_create(user=resumer).stripe_customer_id
    assert theirs != own and resumed.intent.customer_id == theirs


def _terms(booking, owner):
    from payments.services import PaymentTerms

    return PaymentTerms(
        payable=booking, owner=owner, subtotal=booking.subtotal, fee=booking.fee, total=booking.total,
        currency=booking.currency, description="seats",
    )  # fmt: skip
