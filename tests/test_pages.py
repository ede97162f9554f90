"""The booking pages without a browser: rendering, booking, cancelling, signing up, demo data."""

import pytest
from django.core.management import call_command
from django.test import Client

from bookings.models import Booking, Event
from tests.factories import BookingFactory, EventFactory, UserFactory

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_site_has_an_icon_for_every_page_admin_included(client):
    answer = client.get("/favicon.ico")
    assert answer.status_code == 200
    assert answer["Content-Type"] == "image/svg+xml"
    assert answer.content.startswith(b"<svg") and "max-age=86400" in answer["Cache-Control"]
    assert b'rel="icon"' in client.get("/").content


def test_event_list_shows_price_and_seats_left():
    event = EventFactory(title="Harbour Jazz", price=2500, capacity=10)
    BookingFactory(event=event, quantity=3)
    page = Client().get("/")
    assert page.status_code == 200
    assert (
        b"Harbour Jazz" in page.content and b"25.00 USD" in page.content and b"7 seats left" in page.content
    )


def test_booking_form_creates_a_booking_and_goes_to_checkout():
    event = EventFactory(price=2000)
    user = UserFactory()
    response = _client(user).post(f"/events/{event.pk}/", {"quantity": 2})
    booking = Booking.objects.get(user=user)
    assert response.status_code == 302 and response["Location"] == f"/bookings/{booking.pk}/pay/"
    checkout = _client(user).get(response["Location"])
    assert (
        b"40.00 USD" in checkout.content
        and b"1.20 USD" in checkout.content
        and b"41.20 USD" in checkout.content
    )


def test_anonymous_booking_asks_to_log_in():
    event = EventFactory()
    response = Client().post(f"/events/{event.pk}/", {"quantity": 1})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert not Booking.objects.exists()


def test_sold_out_is_said_on_the_page():
    event = EventFactory(capacity=1)
    page = _client(UserFactory()).post(f"/events/{event.pk}/", {"quantity": 2})
    assert page.status_code == 200 and b"Only 1 seats are left" in page.content


def test_other_users_bookings_are_not_found():
    booking = BookingFactory()
    stranger = _client(UserFactory())
    for url in (f"/bookings/{booking.pk}/pay/", f"/bookings/{booking.pk}/result/"):
        assert stranger.get(url).status_code == 404
    assert stranger.post(f"/bookings/{booking.pk}/cancel/").status_code == 404


def test_cancel_an_unpaid_booking_from_my_bookings():
    booking = BookingFactory()
    client = _client(booking.user)
    page = client.get("/my-bookings/")
    assert booking.reference.encode() in page.content and b"Cancel" in page.content
    response = client.post(f"/bookings/{booking.pk}/cancel/", follow=True)
    assert b"is cancelled" in response.content
    assert Booking.objects.get(pk=booking.pk).status == "cancelled"


def test_signup_logs_in():
    response = Client().post(
        "/accounts/signup/",
        {
            "username": "newcomer",
            "email": "new@example.com",
            "password1": "a-long-pass-phrase-9",
            "password2": "a-long-pass-phrase-9",
        },
        follow=True,
    )
    assert response.context["user"].username == "newcomer"


def test_load_demo_is_idempotent():
    call_command("load_demo", stdout=None)
    call_command("load_demo", stdout=None)
    assert Event.objects.count() == 4
    from django.contrib.auth import get_user_model

    staff = get_user_model().objects.get(username="staff")
    assert staff.is_staff and staff.has_perm("payments.refund_payment")
    assert Client().login(username="booker", password="booker-pass-123")
