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


def test_the_seat_count_survives_logging_in():
    event = EventFactory()
    response = Client().post(f"/events/{event.pk}/", {"quantity": 3})
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next=%2Fevents%2F{event.pk}%2F%3Fquantity%3D3"
    login = Client().get(response["Location"])
    assert f'value="/events/{event.pk}/?quantity=3"'.encode() in login.content
    back = _client(UserFactory()).get(f"/events/{event.pk}/?quantity=3")
    assert b'value="3"' in back.content
    # Nonsense falls back to one seat, never an error.
    assert b'value="1"' in _client(UserFactory()).get(f"/events/{event.pk}/?quantity=999x").content


def test_signing_up_from_the_login_page_comes_back_too():
    event = EventFactory()
    back = f"/events/{event.pk}/?quantity=2"
    response = Client().post(
        f"/accounts/signup/?next={back}",
        {
            "username": "newcomer",
            "email": "new@example.com",
            "password1": "a-long-pass-phrase-9",
            "password2": "a-long-pass-phrase-9",
            "next": back,
        },
    )
    assert response["Location"] == back
    elsewhere = Client().post(
        "/accounts/signup/",
        {
            "username": "other",
            "email": "other@example.com",
            "password1": "a-long-pass-phrase-9",
            "password2": "a-long-pass-phrase-9",
            "next": "https://evil.example/",
        },
    )
    assert elsewhere["Location"] == "/"


def test_event_times_are_in_the_events_time_zone_with_its_name():
    from datetime import UTC, datetime

    event = EventFactory(
        title="Spree Jazz", starts_at=datetime(2031, 1, 10, 18, 0, tzinfo=UTC), time_zone="Europe/Berlin"
    )
    page = Client().get(f"/events/{event.pk}/").content.decode()
    assert "Friday 10 January 2031, 19:00 CET (Europe/Berlin)" in page
    assert "Fri 10 Jan 2031, 19:00 CET (Europe/Berlin)" in Client().get("/").content.decode()
    booking = BookingFactory(event=event, expires_at=datetime(2031, 1, 1, 9, 11, tzinfo=UTC))
    checkout = _client(booking.user).get(f"/bookings/{booking.pk}/pay/").content.decode()
    assert "held until <time" in checkout and "10:11 CET (Europe/Berlin)</time>" in checkout


def test_an_unknown_time_zone_is_refused():
    from django.core.exceptions import ValidationError

    event = EventFactory.build(time_zone="Mars/Olympus", host=UserFactory())
    with pytest.raises(ValidationError) as error:
        event.full_clean()
    assert "time_zone" in error.value.message_dict


def _paid(booking, **extra):
    from tests.factories import PaymentFactory

    fields = {
        "status": "succeeded",
        "stripe_payment_intent_id": f"pi_{booking.reference}",
        "card_brand": "visa",
        "card_last4": "4242",
        "succeeded_at": booking.created_at,
        **extra,
    }
    return PaymentFactory(payable=booking, **fields)


@pytest.mark.parametrize("refund_fee", [True, False])
def test_cancelling_a_paid_booking_first_says_what_comes_back(settings, refund_fee):
    settings.PAYMENTS = {**getattr(settings, "PAYMENTS", {}), "REFUND_FEE": refund_fee}
    booking = BookingFactory(status="confirmed", expires_at=None)
    _paid(booking)
    client = _client(booking.user)
    page = client.get(f"/bookings/{booking.pk}/cancel/").content.decode()
    refund = (booking.total - (0 if refund_fee else booking.fee)) / 100
    assert f"You get <strong>{refund:.2f} USD</strong> back" in page
    assert ("The processing fee of" in page) is not refund_fee
    if not refund_fee:
        assert f"The processing fee of {booking.fee / 100:.2f} USD is not refunded." in page
    assert f"Cancel and refund {refund:.2f} USD" in page
    assert Booking.objects.get(pk=booking.pk).status == "confirmed"  # looking changes nothing


def test_outside_the_refund_window_the_page_says_why_and_offers_no_cancel():
    from datetime import timedelta

    from django.utils import timezone

    event = EventFactory(starts_at=timezone.now() + timedelta(hours=2))
    booking = BookingFactory(event=event, status="confirmed", expires_at=None)
    _paid(booking)
    client = _client(booking.user)
    page = client.get(f"/bookings/{booking.pk}/cancel/").content.decode()
    assert "cannot be cancelled with a refund now" in page and "24 hours before the event" in page
    assert "confirm-cancel" not in page
    client.post(f"/bookings/{booking.pk}/cancel/")
    assert Booking.objects.get(pk=booking.pk).status == "confirmed"


def test_the_booking_page_lists_attempts_and_numbers_refunds_per_payment():
    from payments.models import Refund

    booking = BookingFactory(status="confirmed", expires_at=None)
    other = _paid(BookingFactory())
    Refund.objects.create(
        payment=other, amount=100, currency="usd", status="succeeded", idempotency_key="r-other"
    )
    payment = _paid(booking, status="partially_refunded")
    for n, amount in enumerate((500, 300)):
        Refund.objects.create(
            payment=payment,
            amount=amount,
            currency="usd",
            status="succeeded",
            reason="requested_by_customer",
            idempotency_key=f"r-{n}",
        )
    page = _client(booking.user).get(f"/bookings/{booking.pk}/").content.decode()
    assert "Attempt 1" in page and "Visa ending 4242" in page and "Partially refunded" in page
    assert "Refund 1: 5.00 USD" in page and "Refund 2: 3.00 USD" in page and "Refund 3" not in page
    assert "Requested by the customer" in page and "requested_by_customer" not in page
    assert _client(UserFactory()).get(f"/bookings/{booking.pk}/").status_code == 404
    rows = _client(booking.user).get("/my-bookings/").content.decode()
    assert f'href="/bookings/{booking.pk}/"' in rows and 'data-label="Seats"' in rows


def test_back_from_stripes_page_without_paying_offers_to_try_again():
    booking = BookingFactory()
    page = _client(booking.user).get(f"/bookings/{booking.pk}/result/?canceled=1").content.decode()
    assert "You left Stripe&#x27;s page before paying, so nothing was charged." in page
    assert f'id="try-again" href="/bookings/{booking.pk}/pay/"' in page


def test_a_next_that_is_not_a_path_never_breaks_signing_up():
    response = Client().post(
        "/accounts/signup/?next=booking-pay",
        {
            "username": "plain",
            "email": "plain@example.com",
            "password1": "a-long-pass-phrase-9",
            "password2": "a-long-pass-phrase-9",
            "next": "booking-pay",
        },
    )
    assert response.status_code == 302  # not a 500 from reversing "booking-pay"


def test_a_disputed_payment_is_not_cancelled_as_if_nothing_was_charged():
    booking = BookingFactory(status="confirmed", expires_at=None)
    _paid(booking, status="disputed")
    client = _client(booking.user)
    page = client.get(f"/bookings/{booking.pk}/cancel/").content.decode()
    assert "Nothing has been charged" not in page and "confirm-cancel" not in page
    assert "Its payment is disputed" in page
    client.post(f"/bookings/{booking.pk}/cancel/")
    assert Booking.objects.get(pk=booking.pk).status == "confirmed"


def test_failed_in_the_address_never_hides_a_payment_going_through():
    booking = BookingFactory()
    _paid(booking, status="processing", succeeded_at=None)
    page = _client(booking.user).get(f"/bookings/{booking.pk}/result/?failed=1").content.decode()
    assert 'data-status="pending"' in page and "try-again" not in page


def test_an_absent_moment_shows_no_time():
    from bookings.templatetags.booking_tags import event_time

    event = EventFactory()
    assert event_time(event, None) == "" and event_time(event).endswith("UTC")


def test_a_refund_that_changed_since_the_page_was_shown_is_confirmed_again_before_anything_happens():
    """A staff refund meanwhile: the booker's click on the old amount refunds nothing and cancels
    nothing; the page shows the new amount to confirm."""
    from payments.models import Refund

    booking = BookingFactory(status="confirmed", expires_at=None)
    payment = _paid(booking)
    client = _client(booking.user)
    page = client.get(f"/bookings/{booking.pk}/cancel/").content.decode()
    assert f'name="refund" value="{booking.total}"' in page
    Refund.objects.create(
        payment=payment, amount=500, currency=payment.currency, status="succeeded",
        stripe_refund_id="re_staff", idempotency_key="staff-refund",
    )  # fmt: skip
    again = client.post(f"/bookings/{booking.pk}/cancel/", {"refund": str(booking.total)}, follow=True)
    now = (booking.total - 500) / 100
    assert again.status_code == 200
    assert f"What comes back changed since you looked: now {now:.2f} USD." in again.content.decode()
    assert f'name="refund" value="{booking.total - 500}"' in again.content.decode()
    assert Booking.objects.get(pk=booking.pk).status == "confirmed"
    assert list(Refund.objects.filter(payment=payment).values_list("amount", flat=True)) == [500]
