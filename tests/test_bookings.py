"""Booking services: amounts from the server, validation, seats under concurrency, signals."""

import threading
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from bookings import services
from bookings.exceptions import BookingError, SoldOut
from bookings.models import Booking
from payments.services import payment_transition
from payments.states import PaymentStatus
from tests.factories import BookingFactory, EventFactory, PaymentFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_create_computes_amounts_on_the_server():
    event = EventFactory(price=2000)
    booking = services.booking_create(user=UserFactory(), event_id=event.pk, quantity=3)
    assert (booking.subtotal, booking.fee, booking.total) == (6000, 180, 6180)
    assert booking.currency == "usd"
    assert booking.status == Booking.Status.PENDING
    assert booking.expires_at > timezone.now()
    assert event.seats_left() == 47


def test_jpy_booking_amounts():
    event = EventFactory(price=1500, currency="JPY")
    booking = services.booking_create(user=UserFactory(), event_id=event.pk, quantity=1)
    assert (booking.subtotal, booking.fee, booking.total, booking.currency) == (
        1500,
        45,
        1545,
        "jpy",
    )


@pytest.mark.parametrize("quantity", [0, -1, 11, "2", 1.5, True, None])
def test_bad_quantity_is_a_validation_error(quantity):
    event = EventFactory()
    with pytest.raises(ValidationError) as info:
        services.booking_create(user=UserFactory(), event_id=event.pk, quantity=quantity)
    assert info.value.code == "invalid_quantity"


def test_past_event_is_a_validation_error():
    event = EventFactory(starts_at=timezone.now() - timedelta(hours=1))
    with pytest.raises(ValidationError) as info:
        services.booking_create(user=UserFactory(), event_id=event.pk, quantity=1)
    assert info.value.code == "event_past"


def test_amount_outside_limits_is_a_validation_error():
    event = EventFactory(price=10)  # 0.10 + fee is below the 0.50 minimum
    with pytest.raises(ValidationError) as info:
        services.booking_create(user=UserFactory(), event_id=event.pk, quantity=1)
    assert info.value.code == "amount_out_of_range"
    big = EventFactory(price=6_000_000)
    with pytest.raises(ValidationError):
        services.booking_create(user=UserFactory(), event_id=big.pk, quantity=2)


def test_bad_currency_is_a_validation_error():
    event = EventFactory(currency="u5d")
    with pytest.raises(ValidationError) as info:
        services.booking_create(user=UserFactory(), event_id=event.pk, quantity=1)
    assert info.value.code == "invalid_currency"


def test_unknown_event_is_a_validation_error():
    with pytest.raises(ValidationError):
        services.booking_create(user=UserFactory(), event_id=999_999, quantity=1)


def test_sold_out():
    event = EventFactory(capacity=2)
    services.booking_create(user=UserFactory(), event_id=event.pk, quantity=2)
    with pytest.raises(SoldOut):
        services.booking_create(user=UserFactory(), event_id=event.pk, quantity=1)


def test_expired_hold_releases_seats():
    event = EventFactory(capacity=2)
    booking = BookingFactory(event=event, quantity=2, expires_at=timezone.now() - timedelta(seconds=1))
    assert event.seats_left() == 2
    services.booking_expire(booking_id=booking.pk)
    booking.refresh_from_db()
    assert booking.status == Booking.Status.EXPIRED


def test_expire_refuses_a_live_hold():
    booking = BookingFactory()
    with pytest.raises(BookingError):
        services.booking_expire(booking_id=booking.pk)


def test_cancelled_booking_cannot_be_confirmed():
    booking = BookingFactory(status=Booking.Status.CANCELLED)
    with pytest.raises(BookingError):
        services.booking_confirm(booking_id=booking.pk)


def test_confirm_and_cancel_are_idempotent():
    booking = BookingFactory()
    services.booking_confirm(booking_id=booking.pk)
    services.booking_confirm(booking_id=booking.pk)
    services.booking_cancel(booking_id=booking.pk)
    services.booking_cancel(booking_id=booking.pk)
    booking.refresh_from_db()
    assert booking.status == Booking.Status.CANCELLED


def test_payment_success_confirms_the_booking_on_commit(django_capture_on_commit_callbacks):
    payment = PaymentFactory(status=PaymentStatus.PROCESSING)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        payment_transition(payment=payment, status=PaymentStatus.SUCCEEDED)
    assert (
        len(callbacks) == 3
    )  # the signals, the success counted, one task for the booker's and the host's emails
    booking = Booking.objects.get(pk=payment.object_id)
    assert booking.status == Booking.Status.CONFIRMED


def test_no_signal_before_commit(django_capture_on_commit_callbacks):
    payment = PaymentFactory(status=PaymentStatus.PROCESSING)
    with django_capture_on_commit_callbacks(execute=False):
        payment_transition(payment=payment, status=PaymentStatus.SUCCEEDED)
    assert Booking.objects.get(pk=payment.object_id).status == Booking.Status.PENDING


@pytest.mark.django_db(transaction=True)
def test_twenty_threads_for_the_last_five_seats():
    event = EventFactory(capacity=5)
    users = [UserFactory() for _ in range(20)]
    barrier = threading.Barrier(20)
    outcomes: list[str] = []
    lock = threading.Lock()

    def book(user):
        try:
            barrier.wait()
            services.booking_create(user=user, event_id=event.pk, quantity=1)
            result = "booked"
        except SoldOut:
            result = "sold_out"
        finally:
            connection.close()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=book, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("booked") == 5
    assert outcomes.count("sold_out") == 15
    assert Booking.objects.filter(event=event).count() == 5
    assert event.seats_left() == 0
