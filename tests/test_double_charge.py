"""At most one successful payment per payable, by construction: a double click while the first
click's success is being applied never makes (and charges) a second attempt."""

import threading

import pytest
from django.db import connection, transaction

from bookings.services import booking_pay
from payments import services
from payments.exceptions import IllegalTransition
from payments.gateway import get_gateway
from payments.models import Payment
from payments.states import PaymentStatus
from tests.factories import BookingFactory

pytestmark = [pytest.mark.emulator, pytest.mark.django_db(transaction=True)]


def test_a_click_while_the_first_success_is_applied_is_refused(stripe_env):
    booking = BookingFactory()
    first = booking_pay(booking_id=booking.pk, payment_method_id=stripe_env.card())
    paid = stripe_env.api("POST", f"/v1/payment_intents/{first.intent.id}/confirm")
    intent = get_gateway().intent_from_object(paid)
    applying, second_click_done = threading.Event(), threading.Event()
    outcome: dict = {}

    def apply_the_success():  # the first click's confirm (or its webhook), held open on purpose
        try:
            with transaction.atomic():
                services.payment_sync_intent(intent=intent)
                applying.set()
                second_click_done.wait(timeout=1.5)  # the second click arrives meanwhile
        finally:
            connection.close()

    def second_click():
        applying.wait(timeout=10)
        try:
            outcome["result"] = booking_pay(
                booking_id=booking.pk, payment_method_id=stripe_env.card(), confirm=True
            )
        except IllegalTransition as error:
            outcome["error"] = error
        finally:
            second_click_done.set()
            connection.close()

    threads = [threading.Thread(target=apply_the_success), threading.Thread(target=second_click)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    charges = [
        c for c in stripe_env.api("GET", "/v1/charges", limit="100")["data"] if c["status"] == "succeeded"
    ]
    assert len(charges) == 1, "the booking was charged twice"
    assert Payment.objects.filter(object_id=str(booking.pk)).count() == 1
    assert Payment.objects.get(pk=first.payment.pk).status == PaymentStatus.SUCCEEDED
    assert "error" in outcome or outcome["result"].payment.pk == first.payment.pk


def test_the_database_refuses_a_second_sale_for_one_payable():
    from django.db import IntegrityError

    from tests.factories import PaymentFactory

    first = PaymentFactory(status=PaymentStatus.SUCCEEDED)
    with pytest.raises(IntegrityError):
        PaymentFactory(
            content_type=first.content_type,
            object_id=first.object_id,
            attempt=2,
            status=PaymentStatus.SUCCEEDED,
        )


def test_no_attempt_is_stuck_behind_its_own_key(stripe_env):
    """A failed 3-D Secure, then a retry that meets a 503, then more tries: it ends paid."""
    from payments.exceptions import ProviderUnavailable

    booking = BookingFactory()
    first = booking_pay(
        booking_id=booking.pk, payment_method_id=stripe_env.card("4000002500003155"), confirm=True
    )
    stripe_env.authenticate(first.intent.id, first.intent.client_secret, success=False)
    stripe_env.fail("POST", "/v1/payment_intents", status=503, times=4)  # every try of the first retry
    with pytest.raises(ProviderUnavailable):
        services.payment_retry(payment=first.payment, payment_method_id=stripe_env.card())
    latest = Payment.objects.filter(object_id=str(booking.pk)).order_by("-attempt").first()
    paid = services.payment_retry(payment=latest, payment_method_id=stripe_env.card())  # another card
    assert paid.payment.status == PaymentStatus.SUCCEEDED
    assert not [c for c in stripe_env.calls("POST") if c.replayed and c.path.endswith("/confirm")]
