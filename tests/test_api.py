"""The REST API: the whole flow over HTTP, who may do what, and the error envelope."""

import base64
import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from bookings.models import Booking
from payments.models import Payment, Refund
from payments.states import PaymentStatus
from tests.factories import BookingFactory, EventFactory, PaymentFactory, UserFactory

pytestmark = pytest.mark.django_db
PASSWORD = "pass-word-123"


def _token_client(user) -> APIClient:
    client = APIClient()
    response = client.post(
        "/api/auth/token/", {"username": user.username, "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200, response.content
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access']}")
    return client


def _error(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "decline_code", "param"}
    return body["error"]


def _refund_staff(**kwargs):
    user = UserFactory(is_staff=True, **kwargs)
    user.user_permissions.add(Permission.objects.get(codename="refund_payment"))
    return user


# The whole flow ---------------------------------------------------------------------------------


@pytest.mark.emulator
@pytest.mark.django_db(transaction=True)
def test_book_pay_and_refund_over_http(stripe_env):
    event = EventFactory(price=2500)
    user = UserFactory()
    api = _token_client(user)

    events = api.get("/api/events/").json()["results"]
    assert [(e["id"], e["price"], e["seats_left"]) for e in events] == [(event.pk, 2500, 50)]

    booking = api.post("/api/bookings/", {"event": event.pk, "quantity": 2}, format="json")
    assert booking.status_code == 201, booking.content
    booking = booking.json()
    assert (booking["subtotal"], booking["fee"], booking["total"], booking["currency"]) == (
        5000,
        150,
        5150,
        "usd",
    )
    base = f"/api/bookings/{booking['id']}/payment"

    intent = api.post(f"{base}/intent/", {}, format="json")
    assert intent.status_code == 200, intent.content
    intent = intent.json()
    assert intent["client_secret"] and intent["requires_action"] is False
    assert intent["payment"]["total"] == 5150 and intent["publishable_key"] == "pk_test_suite"

    confirmed = api.post(f"{base}/confirm/", {"payment_method_id": stripe_env.card()}, format="json")
    assert confirmed.status_code == 200, confirmed.content
    status = api.get(f"{base}/status/").json()
    assert status["status"] == "succeeded" and status["card_last4"] == "4242"
    assert api.get(f"/api/bookings/{booking['id']}/").json()["status"] == "confirmed"

    refund = api.post(
        f"{base}/refund/", {"amount": "10.00", "reason": "requested_by_customer"}, format="json"
    )
    assert refund.status_code == 201, refund.content
    assert refund.json()["refund"]["amount"] == 1000
    status = api.get(f"{base}/status/").json()
    assert (status["status"], status["refunded"], status["refundable"]) == ("partially_refunded", 1000, 4150)
    history = api.get(f"/api/bookings/{booking['id']}/payments/").json()
    assert [p["status"] for p in history] == ["partially_refunded"]
    assert api.get("/api/payments/").json()["results"][0]["id"] == status["id"]


@pytest.mark.emulator
def test_three_d_secure_over_http(stripe_env):
    booking = BookingFactory(user=UserFactory())
    api = _token_client(booking.user)
    base = f"/api/bookings/{booking.pk}/payment"
    started = api.post(
        f"{base}/intent/",
        {"payment_method_id": stripe_env.card("4000002500003155"), "confirm_immediately": True},
        format="json",
    ).json()
    assert started["requires_action"] is True
    assert started["next_action"]["type"] == "use_stripe_sdk"
    stripe_env.authenticate(started["payment"]["payment_intent"], started["client_secret"])
    assert api.get(f"{base}/status/").json()["status"] == "succeeded"


@pytest.mark.emulator
def test_a_charge_after_3ds_whose_recording_fails_is_answered_as_charged(stripe_env):
    """The confirm after the bank's challenge: Stripe charged the card, our write fails. The
    answer is Stripe's (succeeded), never an error; the next status read records it."""
    from django.db import connection

    booking = BookingFactory(user=UserFactory())
    api = _token_client(booking.user)
    base = f"/api/bookings/{booking.pk}/payment"
    started = api.post(
        f"{base}/intent/",
        {"payment_method_id": stripe_env.card("4000002500003155"), "confirm_immediately": True},
        format="json",
    ).json()
    stripe_env.authenticate(started["payment"]["payment_intent"], started["client_secret"])
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION refuse_success() RETURNS trigger AS $$ BEGIN"
            " RAISE EXCEPTION 'the disk is full'; END $$ LANGUAGE plpgsql"
        )
        cursor.execute(
            "CREATE TRIGGER refuse_success BEFORE UPDATE ON payments_payment FOR EACH ROW"
            " WHEN (NEW.status = 'succeeded') EXECUTE FUNCTION refuse_success()"
        )
    try:
        confirmed = api.post(f"{base}/confirm/", {}, format="json")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER refuse_success ON payments_payment")
            cursor.execute("DROP FUNCTION refuse_success()")
    assert confirmed.status_code == 200, confirmed.content
    assert confirmed.json()["payment"]["status"] == "succeeded"
    assert Payment.objects.get(object_id=str(booking.pk)).status == "requires_action"  # not recorded
    assert api.get(f"{base}/status/").json()["status"] == "succeeded"


@pytest.mark.emulator
def test_declined_card_is_402_with_the_envelope_then_retry(stripe_env):
    booking = BookingFactory()
    api = _token_client(booking.user)
    base = f"/api/bookings/{booking.pk}/payment"
    declined = api.post(
        f"{base}/intent/",
        {"payment_method_id": stripe_env.card("4000000000000341"), "confirm_immediately": True},
        format="json",
    )
    assert declined.status_code == 402
    assert _error(declined)["code"] == "card_declined"
    assert _error(declined)["decline_code"] == "generic_decline"
    status = api.get(f"{base}/status/").json()
    assert status["status"] == "failed" and status["last_error"]["code"] == "card_declined"
    assert status["last_error"]["decline_code"] == "generic_decline"
    retried = api.post(f"{base}/retry/", {"payment_method_id": stripe_env.card()}, format="json")
    assert retried.status_code == 200 and retried.json()["payment"]["status"] == "succeeded"
    assert len(api.get(f"/api/bookings/{booking.pk}/payments/").json()) == 2


@pytest.mark.emulator
@pytest.mark.parametrize(
    ("card", "code", "decline_code"),
    [
        ("4000000000009995", "card_declined", "insufficient_funds"),
        ("4000000000000002", "card_declined", "generic_decline"),
        ("4000000000009987", "card_declined", "lost_card"),
        ("4000000000000069", "expired_card", "expired_card"),
        ("4000000000000127", "incorrect_cvc", "incorrect_cvc"),
    ],
)
def test_decline_code_reaches_the_envelope_and_the_row(stripe_env, card, code, decline_code):
    booking = BookingFactory()
    api = _token_client(booking.user)
    declined = api.post(
        f"/api/bookings/{booking.pk}/payment/intent/",
        {"payment_method_id": stripe_env.card(card), "confirm_immediately": True},
        format="json",
    )
    assert declined.status_code == 402
    assert (_error(declined)["code"], _error(declined)["decline_code"]) == (code, decline_code)
    payment = Payment.objects.get(object_id=str(booking.pk))
    assert (payment.last_error_code, payment.last_error_decline_code) == (code, decline_code)


@pytest.mark.emulator
def test_checkout_over_http(stripe_env):
    booking = BookingFactory()
    api = _token_client(booking.user)
    response = api.post(f"/api/bookings/{booking.pk}/payment/checkout/", {}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["session_id"].startswith("cs_test_") and body["url"]
    stripe_env.complete_checkout(body["session_id"])
    paid = api.get(f"/api/payments/checkout/{body['session_id']}/").json()
    assert paid["status"] == "succeeded"
    evil = api.post(
        f"/api/bookings/{BookingFactory(user=booking.user).pk}/payment/checkout/",
        {"success_url": "https://evil.example/steal"},
        format="json",
    )
    assert evil.status_code == 400 and _error(evil)["param"] == "success_url"


@pytest.mark.emulator
def test_cancel_a_paid_booking_refunds_it(stripe_env):
    booking = BookingFactory()
    api = _token_client(booking.user)
    api.post(
        f"/api/bookings/{booking.pk}/payment/intent/",
        {"payment_method_id": stripe_env.card(), "confirm_immediately": True},
        format="json",
    )
    response = api.post(f"/api/bookings/{booking.pk}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    payment = Payment.objects.get(object_id=str(booking.pk))
    assert payment.status == PaymentStatus.REFUNDED
    assert len(stripe_env.api("GET", "/v1/refunds")["data"]) == 1


@pytest.mark.emulator
def test_owner_cannot_refund_after_the_cutoff(stripe_env):
    booking = BookingFactory(event=EventFactory(starts_at=timezone.now() + timedelta(hours=2)))
    api = _token_client(booking.user)
    api.post(
        f"/api/bookings/{booking.pk}/payment/intent/",
        {"payment_method_id": stripe_env.card(), "confirm_immediately": True},
        format="json",
    )
    response = api.post(f"/api/bookings/{booking.pk}/payment/refund/", {}, format="json")
    assert response.status_code == 409 and _error(response)["code"] == "refund_window_closed"
    staff = _token_client(_refund_staff())
    assert staff.post(f"/api/bookings/{booking.pk}/payment/refund/", {}, format="json").status_code == 201


# Authorization matrix ------------------------------------------------------------------------------------

ENDPOINTS = [
    ("get", "/api/bookings/{id}/"),
    ("post", "/api/bookings/{id}/cancel/"),
    ("post", "/api/bookings/{id}/payment/intent/"),
    ("post", "/api/bookings/{id}/payment/confirm/"),
    ("get", "/api/bookings/{id}/payment/status/"),
    ("post", "/api/bookings/{id}/payment/refund/"),
    ("post", "/api/bookings/{id}/payment/retry/"),
    ("post", "/api/bookings/{id}/payment/checkout/"),
    ("get", "/api/bookings/{id}/payments/"),
    ("get", "/api/payments/{payment}/"),
]

# Expected status of each endpoint (by index) for each role, on a paid booking that is not theirs.
MATRIX = {
    "anonymous": [401] * 10,
    "other_user": [404] * 10,
    "staff_without_permission": [404] * 10,
    "staff_with_permission": [404, 404, 404, 404, 200, 201, 404, 404, 404, 404],
}


@pytest.mark.emulator
@pytest.mark.parametrize("role", list(MATRIX))
def test_authorization_matrix(stripe_env, role):
    booking = BookingFactory(quantity=4)
    owner = _token_client(booking.user)
    paid = owner.post(
        f"/api/bookings/{booking.pk}/payment/intent/",
        {"payment_method_id": stripe_env.card(), "confirm_immediately": True},
        format="json",
    ).json()
    payment_id = paid["payment"]["id"]
    booking_before = Booking.objects.filter(pk=booking.pk).values().get()
    stripe_env.requests.clear()
    client = {
        "anonymous": APIClient(),
        "other_user": _token_client(UserFactory()),
        "staff_without_permission": _token_client(UserFactory(is_staff=True)),
        "staff_with_permission": _token_client(_refund_staff()),
    }[role]
    statuses = []
    for method, path in ENDPOINTS:
        url = path.format(id=booking.pk, payment=payment_id)
        body = {"payment_method_id": "pm_card_visa", "amount": "1.00"} if method == "post" else None
        response = getattr(client, method)(url, body, format="json")
        statuses.append(response.status_code)
        _error(response) if response.status_code >= 400 else None
    assert statuses == MATRIX[role]
    writes = [c for c in stripe_env.calls("POST")]
    if role == "staff_with_permission":
        assert [c.path for c in writes] == ["/v1/refunds"]
    else:
        assert writes == []
    assert Booking.objects.filter(pk=booking.pk).values().get() == booking_before


@pytest.mark.emulator
def test_owner_row_of_the_matrix(stripe_env):
    booking = BookingFactory()
    api = _token_client(booking.user)
    base = f"/api/bookings/{booking.pk}"
    assert api.get(f"{base}/").status_code == 200
    assert api.post(f"{base}/payment/intent/", {}, format="json").status_code == 200
    assert (
        api.post(
            f"{base}/payment/confirm/", {"payment_method_id": stripe_env.card()}, format="json"
        ).status_code
        == 200
    )
    assert api.get(f"{base}/payment/status/").status_code == 200
    assert api.get(f"{base}/payments/").status_code == 200
    assert (
        api.post(
            f"{base}/payment/retry/", {"payment_method_id": stripe_env.card()}, format="json"
        ).status_code
        == 409
    )
    assert api.post(f"{base}/payment/refund/", {"amount": "1.00"}, format="json").status_code == 201
    assert api.post(f"{base}/cancel/").status_code == 200


# Mass assignment -----------------------------------------------------------------------------------------


@pytest.mark.emulator
def test_client_sent_amounts_status_and_owner_are_ignored(stripe_env):
    user, victim = UserFactory(), UserFactory()
    event = EventFactory(price=2000)
    api = _token_client(user)
    created = api.post(
        "/api/bookings/",
        {
            "event": event.pk,
            "quantity": 1,
            "amount": 1,
            "total": 1,
            "fee": 0,
            "subtotal": 1,
            "status": "confirmed",
            "user": victim.pk,
            "currency": "jpy",
        },
        format="json",
    ).json()
    booking = Booking.objects.get(pk=created["id"])
    assert (booking.user, booking.status, booking.total, booking.fee, booking.currency) == (
        user,
        "pending",
        2060,
        60,
        "usd",
    )
    api.post(
        f"/api/bookings/{booking.pk}/payment/intent/",
        {"amount": 1, "total": 1, "currency": "jpy", "status": "succeeded", "fee": 0},
        format="json",
    )
    payment = Payment.objects.get(object_id=str(booking.pk))
    assert (payment.total, payment.currency, payment.status, payment.owner) == (2060, "usd", "created", user)
    intent = stripe_env.api("GET", f"/v1/payment_intents/{payment.stripe_payment_intent_id}")
    assert (intent["amount"], intent["currency"]) == (2060, "usd")


# Validation and errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"event": 1, "quantity": 0}, "quantity"),
        ({"quantity": 1}, "event"),
        ({"event": "x", "quantity": 1}, "event"),
        ({"event": 1, "quantity": "lots"}, "quantity"),
        ({"event": 1, "quantity": -2}, "quantity"),
    ],
)
def test_bad_booking_input_is_a_400_envelope(body, param):
    EventFactory(pk=1)
    response = _token_client(UserFactory()).post("/api/bookings/", body, format="json")
    assert response.status_code == 400
    assert _error(response)["param"] == param


def test_past_event_and_sold_out():
    api = _token_client(UserFactory())
    past = EventFactory(starts_at=timezone.now() - timedelta(days=1))
    assert (
        _error(api.post("/api/bookings/", {"event": past.pk, "quantity": 1}, format="json"))["code"]
        == "event_past"
    )
    small = EventFactory(capacity=1)
    assert api.post("/api/bookings/", {"event": small.pk, "quantity": 1}, format="json").status_code == 201
    sold = api.post("/api/bookings/", {"event": small.pk, "quantity": 1}, format="json")
    assert sold.status_code == 409 and _error(sold)["code"] == "sold_out"


@pytest.mark.emulator
@pytest.mark.parametrize(
    ("amount", "code"),
    [
        ("10.001", "too_many_decimals"),
        (10, "not_a_string"),
        ("-1.00", "invalid_amount"),
        ("999.00", "not_refundable"),
    ],
)
def test_bad_refund_amounts(stripe_env, amount, code):
    booking = BookingFactory()
    api = _token_client(booking.user)
    api.post(
        f"/api/bookings/{booking.pk}/payment/intent/",
        {"payment_method_id": stripe_env.card(), "confirm_immediately": True},
        format="json",
    )
    response = api.post(f"/api/bookings/{booking.pk}/payment/refund/", {"amount": amount}, format="json")
    assert response.status_code in (400, 409)
    assert _error(response)["code"] == code
    assert stripe_env.calls("POST", "/v1/refunds") == []


def test_unknown_api_url_is_a_json_404(client):
    response = client.get("/api/nothing-here/")
    assert response.status_code == 404 and _error(response)["code"] == "not_found"


def test_no_payment_yet_is_409():
    booking = BookingFactory()
    response = _token_client(booking.user).get(f"/api/bookings/{booking.pk}/payment/status/")
    assert response.status_code == 409 and _error(response)["code"] == "no_payment"


@pytest.mark.emulator
def test_stripe_down_is_503_without_internals(stripe_env):
    booking = BookingFactory()
    stripe_env.fail("POST", "/v1/customers", status=500, times=10)
    response = _token_client(booking.user).post(
        f"/api/bookings/{booking.pk}/payment/intent/", {}, format="json"
    )
    assert response.status_code == 503
    error = _error(response)
    assert error["code"] == "provider_unavailable"
    assert "Traceback" not in response.content.decode() and "sk_test" not in response.content.decode()


@pytest.mark.emulator
def test_throttled_is_429(stripe_env, settings, throttle_window):
    settings.PAYMENTS = {**settings.PAYMENTS, "THROTTLE_RATES": {"payments": "2/min"}}
    from django.core.cache import cache

    cache.clear()
    booking = BookingFactory()
    api = _token_client(booking.user)
    codes = [
        api.post(f"/api/bookings/{booking.pk}/payment/intent/", {}, format="json").status_code
        for _ in range(3)
    ]
    assert codes == [200, 200, 429]
    third = api.post(f"/api/bookings/{booking.pk}/payment/intent/", {}, format="json")
    assert _error(third)["code"] == "throttled" and third["Retry-After"]


# JWT ------------------------------------------------------------------------------------------------------


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_jwt_attacks_are_401():
    user = UserFactory()
    expired = AccessToken.for_user(user)
    expired.set_exp(lifetime=-timedelta(seconds=1))
    good = str(AccessToken.for_user(user))
    header, payload, signature = good.split(".")
    wrong_signature = f"{header}.{payload}.{signature[::-1]}"
    alg_none = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}."
    for token in (str(expired), wrong_signature, alg_none, "garbage"):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        response = client.get("/api/bookings/")
        assert response.status_code == 401, token
        _error(response)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {good}")
    assert client.get("/api/bookings/").status_code == 200


def test_rotated_refresh_token_cannot_be_reused():
    user = UserFactory()
    client = APIClient()
    pair = client.post(
        "/api/auth/token/", {"username": user.username, "password": PASSWORD}, format="json"
    ).json()
    rotated = client.post("/api/auth/token/refresh/", {"refresh": pair["refresh"]}, format="json")
    assert rotated.status_code == 200 and rotated.json()["refresh"] != pair["refresh"]
    reused = client.post("/api/auth/token/refresh/", {"refresh": pair["refresh"]}, format="json")
    assert reused.status_code == 401
    assert _error(reused)["code"] == "token_not_valid"


def test_inactive_user_gets_no_token_and_their_token_stops_working():
    user = UserFactory()
    token = str(AccessToken.for_user(user))
    user.is_active = False
    user.save()
    response = APIClient().post(
        "/api/auth/token/", {"username": user.username, "password": PASSWORD}, format="json"
    )
    assert response.status_code == 401
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get("/api/bookings/").status_code == 401


def test_access_tokens_are_short_lived(settings):
    assert settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"] <= timedelta(minutes=15)


# Config and health ------------------------------------------------------------------------------------------


def test_payment_config_is_public(client):
    body = client.get("/api/payment/config/").json()
    assert body == {
        "publishable_key": "pk_test_suite",
        "currency": "usd",
        "fee_rate": "0.03",
        "fee_fixed": 0,
        "min_amount": 50,
        "max_amount": 10_000_000,
        "refund_cutoff_hours": 24.0,
        "refund_fee": True,
    }


@pytest.mark.emulator
def test_health(stripe_env, client):
    assert client.get("/health/").json() == {
        "healthy": True,
        "database": "ok",
        "broker": "ok",
        "stripe": "ok",
    }
    stripe_env.fail("GET", "/v1/events", status=500, times=10)
    response = client.get("/health/")
    assert response.status_code == 503 and response.json()["stripe"] == "unavailable"


@pytest.mark.emulator
def test_health_without_a_broker_is_a_503_in_production_and_inline_in_development(
    stripe_env, client, settings
):
    from celery import current_app

    previous = current_app.conf.broker_url
    previous_write = current_app.conf.broker_write_url
    # Nothing listens there (the write URL is what the health check and the senders use).
    current_app.conf.broker_url = current_app.conf.broker_write_url = "redis://127.0.0.1:1/0"
    try:
        settings.PAYMENTS = {**settings.PAYMENTS, "RUN_TASKS_INLINE_WITHOUT_BROKER": False}
        down = client.get("/health/")
        assert (down.status_code, down.json()["broker"]) == (503, "unavailable")
        settings.PAYMENTS = {**settings.PAYMENTS, "RUN_TASKS_INLINE_WITHOUT_BROKER": True}
        inline = client.get("/health/")
        assert (inline.status_code, inline.json()["broker"]) == (200, "inline (development)")
    finally:
        current_app.conf.broker_url, current_app.conf.broker_write_url = previous, previous_write
    # ./scripts/run without Redis: CELERY_TASK_ALWAYS_EAGER (the app reads CELERY_-named settings).
    current_app.conf.update(CELERY_TASK_ALWAYS_EAGER=True)
    try:
        assert client.get("/health/").json()["broker"] == "inline (development)"
    finally:
        current_app.conf.update(CELERY_TASK_ALWAYS_EAGER=False)


@pytest.mark.emulator
def test_saved_cards_over_http(stripe_env):
    user = UserFactory()
    api = _token_client(user)
    assert api.get("/api/payment/methods/").json() == []
    setup = api.post("/api/payment/methods/setup/")
    assert setup.status_code == 201 and setup.json()["client_secret"]
    from payments.models import Customer

    card = stripe_env.card()
    stripe_env.api(
        "POST",
        f"/v1/payment_methods/{card}/attach",
        customer=Customer.objects.get(user=user).stripe_customer_id,
    )
    assert [m["last4"] for m in api.get("/api/payment/methods/").json()] == ["4242"]
    other = _token_client(UserFactory())
    assert other.delete(f"/api/payment/methods/{card}/").status_code == 404
    assert api.delete(f"/api/payment/methods/{card}/").status_code == 204
    assert Refund.objects.count() == 0


def test_list_endpoints_take_a_bounded_number_of_queries(django_assert_max_num_queries):
    user = UserFactory()
    for i in range(30):
        booking = BookingFactory(user=user)
        payment = PaymentFactory(payable=booking, status="partially_refunded", idempotency_key=f"q-{i}")
        for n in range(2):
            Refund.objects.create(
                payment=payment,
                amount=100,
                currency="usd",
                status="succeeded",
                stripe_refund_id=f"re_q_{i}_{n}",
                idempotency_key=f"rq-{i}-{n}",
            )
    api = _token_client(user)
    with django_assert_max_num_queries(6):
        payments = api.get("/api/payments/").json()
    assert payments["count"] == 30 and payments["results"][0]["refunded"] == 200
    with django_assert_max_num_queries(6):
        bookings = api.get("/api/bookings/").json()
    assert {b["payment_status"] for b in bookings["results"]} == {"partially_refunded"}


@pytest.mark.emulator
def test_a_refused_card_is_emailed_only_when_the_hold_ends_unpaid(
    stripe_env, mailoutbox, django_capture_on_commit_callbacks
):
    """Issue 17: no "did not go through" email for an attempt a retry may fix; one when the hold
    ends unpaid, saying why the card was refused."""
    from bookings.emails import email_send
    from bookings.models import EmailLog
    from bookings.services import booking_expire_due

    booking = BookingFactory()
    api = _token_client(booking.user)
    with django_capture_on_commit_callbacks(execute=True):
        api.post(
            f"/api/bookings/{booking.pk}/payment/intent/",
            {"payment_method_id": stripe_env.card("4000000000009995"), "confirm_immediately": True},
            format="json",
        )
    assert not EmailLog.objects.filter(booking=booking).exists()
    Booking.objects.filter(pk=booking.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    booking_expire_due()
    assert list(EmailLog.objects.filter(booking=booking).values_list("kind", flat=True)) == ["unpaid"]
    email_send(booking_id=booking.pk, kind="unpaid")
    assert "Your card has insufficient funds." in mailoutbox[-1].body
    assert "seats have been released and nothing was charged" in mailoutbox[-1].body


@pytest.mark.emulator
def test_starting_a_payment_costs_the_same_queries_after_a_thousand_earlier_payments(
    stripe_env, django_capture_on_commit_callbacks
):
    """Issue 15: a payment start runs a fixed number of SQL queries whatever the user's history."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.factories import bulk_paid_payments

    user = UserFactory()
    api = _token_client(user)

    def start() -> int:
        booking = BookingFactory(user=user)
        # The commit hooks run too: the booking's confirmation and its email rows are counted.
        with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
            response = api.post(
                f"/api/bookings/{booking.pk}/payment/intent/",
                {"payment_method_id": stripe_env.card(), "confirm_immediately": True},
                format="json",
            )
        assert response.status_code in (200, 201), response.content
        assert response.json()["payment"]["status"] == "succeeded"
        return len(queries)

    start()  # the first one: a Stripe customer is made for the user
    after_one = start()
    bulk_paid_payments(1000, owners=[user], prefix="history")
    after_a_thousand = start()
    assert after_one == after_a_thousand, (after_one, after_a_thousand)
    # pinned: a new query here is a choice, not an accident (the attempts read once, the payer's
    # customer read with the payable's lock, the created intent linked with the call's timeline entry
    # in one statement, the booking read once, the response's refunds read once; the confirmation's
    # emails recorded in one insert). 32 here, 30 in a request: inside the test's transaction the
    # linking statement gets a savepoint and its release (in a request it runs on its own).
    assert after_one == 32, after_one
