"""Password guessing is slowed per address and per account; a forged X-Forwarded-For changes nothing."""

import pytest
from rest_framework.test import APIClient

from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db]

PASSWORD = "pass-word-123"


def _token(client, username, password, **headers):
    return client.post(
        "/api/auth/token/", {"username": username, "password": password}, format="json", **headers
    )


@pytest.fixture(autouse=True)
def _inside_one_throttle_window(throttle_window):
    """Every test here counts requests against a throttle."""


def test_rotating_x_forwarded_for_does_not_escape_the_address_throttle(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "auth": "3/min"},
    }
    client = APIClient()
    answers = [
        _token(client, f"nobody{n}", "x", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").status_code for n in range(5)
    ]
    assert answers[:3] == [401, 401, 401] and answers[3:] == [429, 429]


def test_behind_one_trusted_proxy_the_proxys_view_of_the_client_counts(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "NUM_PROXIES": 1,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "auth": "2/min"},
    }
    client = APIClient()
    # The client writes its own X-Forwarded-For; the proxy appends the address it saw.
    first = [_token(client, f"a{n}", "x", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}, 198.51.100.7") for n in range(3)]
    assert [r.status_code for r in first] == [401, 401, 429]
    # Another client behind the same proxy is not locked out by the first.
    assert _token(client, "b", "x", HTTP_X_FORWARDED_FOR="198.51.100.8").status_code == 401


def test_one_account_guessed_from_many_addresses_is_throttled(settings):
    user = UserFactory()
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "auth_account": "3/min",
        },
    }
    answers = [
        _token(APIClient(REMOTE_ADDR=f"203.0.113.{n}"), user.username.upper(), "wrong").status_code
        for n in range(4)
    ]
    assert answers == [401, 401, 401, 429]


@pytest.mark.parametrize("login_url", ["/accounts/login/", "/admin/login/"])
def test_login_pages_lock_out_after_repeated_failures(client, settings, login_url):
    settings.AXES_FAILURE_LIMIT = 3
    user = UserFactory(is_staff=True)
    for _ in range(3):
        client.post(login_url, {"username": user.username, "password": "wrong"})
    locked = client.post(login_url, {"username": user.username, "password": PASSWORD})
    assert locked.status_code == 429
    assert b"Too many failed logins" in locked.content
    # Another address and another account are not locked with it.
    other = UserFactory(is_staff=True)
    elsewhere = client.post(
        login_url, {"username": other.username, "password": PASSWORD}, REMOTE_ADDR="192.0.2.9"
    )
    assert elsewhere.status_code == 302


def test_api_token_lockout_answers_in_the_envelope(settings):
    settings.AXES_FAILURE_LIMIT = 2
    user = UserFactory()
    client = APIClient()
    for _ in range(2):
        _token(client, user.username, "wrong")
    locked = _token(client, user.username, PASSWORD)
    assert locked.status_code == 429
    assert locked.json()["error"]["code"] == "throttled"


def _pair(user):
    return (
        APIClient()
        .post("/api/auth/token/", {"username": user.username, "password": PASSWORD}, format="json")
        .json()
    )


def _refresh(token):
    return APIClient().post("/api/auth/token/refresh/", {"refresh": token}, format="json")


@pytest.mark.django_db(transaction=True)
def test_one_refresh_token_spent_in_parallel_gives_one_pair():
    import threading

    from django.db import connection

    refresh = _pair(UserFactory())["refresh"]
    barrier, answers = threading.Barrier(8), []

    def spend():
        barrier.wait()
        try:
            answers.append(_refresh(refresh).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [200] + [401] * 7


def test_a_password_change_revokes_every_refresh_token():
    user = UserFactory()
    first, second = _pair(user)["refresh"], _pair(user)["refresh"]
    user.set_password("a-new-pass-word-456")
    user.save()
    assert _refresh(first).status_code == 401 and _refresh(second).status_code == 401
    user.first_name = "Changed"  # other saves revoke nothing
    user.save()
    fresh = APIClient().post(
        "/api/auth/token/", {"username": user.username, "password": "a-new-pass-word-456"}, format="json"
    )
    assert _refresh(fresh.json()["refresh"]).status_code == 200


def test_logout_blacklists_the_refresh_token():
    refresh = _pair(UserFactory())["refresh"]
    assert APIClient().post("/api/auth/logout/", {"refresh": refresh}, format="json").status_code == 200
    assert _refresh(refresh).status_code == 401


def test_a_deleted_users_refresh_token_is_401_not_404():
    user = UserFactory()
    refresh = _pair(user)["refresh"]
    user.delete()
    response = _refresh(refresh)
    assert response.status_code == 401 and response.json()["error"]["message"]


# Bad input never answers 500 ---------------------------------------------------------------------


def test_a_deeply_nested_json_body_is_a_400(client):
    body = "[" * 5000 + "]" * 5000
    response = client.post("/api/auth/token/", data=body, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "parse_error"


def test_a_huge_body_is_a_413(client):
    body = '{"username": "' + "x" * (2 * 1024 * 1024) + '"}'
    response = client.post("/api/auth/token/", data=body, content_type="application/json")
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


@pytest.mark.parametrize(
    "query", ["limit=100000000000000000000", "offset=100000000000000000000", "limit=100000"]
)
def test_huge_limits_and_offsets_are_bounded(client, query):
    from tests.factories import EventFactory

    EventFactory.create_batch(3)
    response = client.get(f"/api/events/?{query}")
    assert response.status_code == 200
    assert len(response.json()["results"]) <= 100


@pytest.mark.parametrize(
    "body",
    [
        b"[1, 2, 3]",
        b'{"type": "payment_intent.succeeded", "data": {"object": {}}}',
        b'{"id": "evt_1", "type": 5, "data": {"object": {}}}',
        b'{"id": "evt_1", "type": "charge.succeeded", "data": "nope"}',
        b'{"id": "' + b"e" * 300 + b'", "type": "charge.succeeded", "data": {"object": {}}}',
        b"not json",
    ],
)
def test_signed_but_malformed_events_are_a_400(client, body):
    from stripe_emulator.harness import sign_payload

    response = client.post(
        "/api/webhooks/stripe/",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign_payload(body, "whsec_test_primary"),
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_payload"


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.example\\@127.0.0.1/",
        "http://evil.example\\.127.0.0.1/",
        "http://user:pw@127.0.0.1/",
        "javascript://127.0.0.1/%0aalert(1)",
        "http://127.0.0.1\t.evil.example/",
    ],
)
def test_return_urls_browsers_would_read_elsewhere_are_refused(url):
    from payments.api.serializers import CheckoutRequestSerializer

    assert not CheckoutRequestSerializer(data={"success_url": url}).is_valid()


def test_return_urls_of_this_site_are_accepted(settings):
    from payments.api.serializers import CheckoutRequestSerializer

    settings.PAYMENTS = {**settings.PAYMENTS, "SITE_URL": "http://127.0.0.1:8000"}
    assert CheckoutRequestSerializer(
        data={"success_url": "http://127.0.0.1:8000/bookings/1/result/"}
    ).is_valid()


@pytest.mark.parametrize("amount", ["١٠.٠٠", "１０.００", "10.00\n"])
def test_amounts_in_other_digits_are_refused(amount):
    from django.core.exceptions import ValidationError

    from payments import money

    if amount.strip() == amount:
        with pytest.raises(ValidationError):
            money.to_minor(amount, "usd")
    else:
        assert money.to_minor(amount, "usd") == 1000  # surrounding whitespace is not a digit


@pytest.mark.parametrize("quantity", ["2.0", 2.0, "٢", True, "1e1"])
def test_quantities_that_are_not_whole_numbers_are_refused(quantity):
    from bookings.api.serializers import BookingCreateSerializer

    assert not BookingCreateSerializer(data={"event": 1, "quantity": quantity}).is_valid()
    assert BookingCreateSerializer(data={"event": 1, "quantity": "2"}).is_valid()


def test_an_inactive_users_401_says_it_in_words():
    user = UserFactory()
    token = _pair(user)["access"]
    user.is_active = False
    user.save()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    message = client.get("/api/bookings/").json()["error"]["message"]
    assert "ErrorDetail" not in message and "{" not in message


@pytest.mark.emulator
def test_someone_elses_saved_card_cannot_pay(stripe_env):
    from bookings.services import booking_pay
    from payments import services
    from payments.exceptions import NotFound
    from tests.factories import BookingFactory

    victim = UserFactory()
    victims_customer = services.customer_get_or_create(user=victim).stripe_customer_id
    card = stripe_env.card()
    stripe_env.api("POST", f"/v1/payment_methods/{card}/attach", customer=victims_customer)
    booking = BookingFactory()
    with pytest.raises(NotFound):
        booking_pay(booking_id=booking.pk, payment_method_id=card, confirm=True)
    assert stripe_env.calls("POST", "/v1/payment_intents") == []
    # The owner of the card pays with it.
    own = booking_pay(booking_id=BookingFactory(user=victim).pk, payment_method_id=card, confirm=True)
    assert own.payment.status == "succeeded"


@pytest.mark.emulator
def test_a_card_stripe_refused_then_a_good_one_pays(stripe_env):
    from bookings.services import booking_pay
    from payments.exceptions import ProviderError
    from tests.factories import BookingFactory

    booking = BookingFactory()
    with pytest.raises(ProviderError):
        booking_pay(booking_id=booking.pk, payment_method_id="pm_doesnotexist", confirm=True)
    paid = booking_pay(booking_id=booking.pk, payment_method_id=stripe_env.card(), confirm=True)
    assert paid.payment.status == "succeeded"


# Nobody empties an event or hammers Stripe ----------------------------------------------------------


def _booker(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def _book(client, event, quantity):
    return client.post("/api/bookings/", {"event": event.pk, "quantity": quantity}, format="json")


def test_unpaid_holds_are_capped_per_user(settings):
    from tests.factories import EventFactory

    settings.BOOKINGS = {**settings.BOOKINGS, "MAX_OPEN_HOLDS": 2, "MAX_HELD_SEATS": 5}
    user, event = UserFactory(), EventFactory(capacity=100)
    client = _booker(user)
    answers = [
        client.post("/api/bookings/", {"event": event.pk, "quantity": 2}, format="json") for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [201, 201, 409]
    assert answers[2].json()["error"]["code"] == "too_many_holds"
    other = _booker(UserFactory()).post("/api/bookings/", {"event": event.pk, "quantity": 5}, format="json")
    assert other.status_code == 201
    too_many_seats = _booker(UserFactory())
    too_many_seats.post("/api/bookings/", {"event": event.pk, "quantity": 4}, format="json")
    assert (
        too_many_seats.post("/api/bookings/", {"event": event.pk, "quantity": 2}, format="json").status_code
        == 409
    )


def test_booking_creation_is_throttled(settings):
    from tests.factories import EventFactory

    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "bookings": "2/min"},
    }
    client, event = _booker(UserFactory()), EventFactory()
    codes = [
        client.post("/api/bookings/", {"event": event.pk, "quantity": 1}, format="json").status_code
        for _ in range(3)
    ]
    assert codes[2] == 429


@pytest.mark.emulator
def test_status_polls_ask_stripe_at_most_every_few_seconds(stripe_env):
    from bookings.services import booking_pay
    from tests.factories import BookingFactory

    booking = BookingFactory()
    booking_pay(booking_id=booking.pk)
    client = _booker(booking.user)
    stripe_env.requests.clear()
    for _ in range(5):
        assert client.get(f"/api/bookings/{booking.pk}/payment/status/").status_code == 200
    assert len(stripe_env.calls("GET", "/v1/payment_intents/")) == 1


@pytest.mark.django_db(transaction=True)
def test_parallel_requests_cannot_slip_past_the_throttle(settings):
    import threading

    from django.db import connection

    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "auth": "10/min"},
    }
    barrier, answers = threading.Barrier(30), []

    def guess(n):
        barrier.wait()
        try:
            answers.append(_token(APIClient(), f"nobody{n}", "x").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers.count(429) == 20


def test_a_cache_outage_lets_payment_requests_through_instead_of_500(settings):
    from rest_framework.test import APIRequestFactory

    from payments.api.throttles import PaymentRateThrottle

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        }
    }
    request = APIRequestFactory().post("/api/bookings/1/payment/intent/")
    request.user = UserFactory()
    assert PaymentRateThrottle().allow_request(request, None) is True  # nothing answers on port 1


# Headers ---------------------------------------------------------------------------------------------


def test_every_page_has_a_content_security_policy(client):
    policy = client.get("/").headers["Content-Security-Policy"]
    assert (
        "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    )
    assert "frame-ancestors 'none'" in policy


def test_the_checkout_page_allows_stripe_js_and_its_inline_script_by_nonce(client, settings):
    from tests.factories import BookingFactory

    settings.STRIPE_JS_URL = "https://js.stripe.com/v3/"
    booking = BookingFactory()
    client.force_login(booking.user)
    page = client.get(f"/bookings/{booking.pk}/pay/")
    policy = page.headers["Content-Security-Policy"]
    assert "https://js.stripe.com" in policy and "https://api.stripe.com" in policy
    nonce = policy.split("'nonce-", 1)[1].split("'", 1)[0]
    assert f'<script nonce="{nonce}">' in page.content.decode()


def test_deploy_checks_pass_with_production_settings():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECRET_KEY", "STRIPE_", "DEBUG"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="False",
        SECRET_KEY="s9#Kq2!vLm7@Xw4$Rt8^Bz1&Hn6*Pd3(Jc5)Fy0_Ge-Ua+Ti=Oe",
        STRIPE_SECRET_KEY="sk_live_x",
        STRIPE_WEBHOOK_SECRET="whsec_x",
        ALLOWED_HOSTS="bookings.example.com",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="True",
        SECURE_HSTS_PRELOAD="True",
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("username", ["a\u0000b", "\ud800x"])
def test_characters_postgresql_cannot_store_are_a_400(client, username):
    import json

    body = json.dumps({"username": username, "password": "x"})
    response = client.post("/api/auth/token/", data=body, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "parse_error"


def test_the_api_takes_json_only(client):
    response = client.post("/api/auth/token/", {"username": "a", "password": "b"})  # a form body
    assert response.status_code == 415


@pytest.mark.parametrize("query", ["limit=abc", "offset=-1", "limit=1.5"])
def test_malformed_page_parameters_are_a_400(client, query):
    response = client.get(f"/api/events/?{query}")
    assert response.status_code == 400 and response.json()["error"]["param"] in ("limit", "offset")


def test_an_overlong_username_is_a_401_not_a_500(client):
    response = _token(APIClient(), "u" * 300, "x")
    assert response.status_code == 401


@pytest.mark.parametrize("forwarded", ["not-an-ip", "1.2.3.4:5555", ""])
def test_a_forwarded_address_that_is_not_an_address_falls_back(settings, forwarded):
    from django.test import RequestFactory

    from config.security import client_ip

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip(request) == "10.0.0.1"


def test_one_account_cannot_be_locked_out_from_many_addresses(client, settings):
    settings.AXES_FAILURE_LIMIT = 3
    user = UserFactory()
    for n in range(5):
        client.post(
            "/accounts/login/", {"username": user.username, "password": "x"}, REMOTE_ADDR=f"198.51.100.{n}"
        )
    owner = client.post(
        "/accounts/login/", {"username": user.username, "password": PASSWORD}, REMOTE_ADDR="192.0.2.1"
    )
    assert owner.status_code == 302


def test_a_password_change_ends_access_tokens_and_any_rotated_refresh():
    from rest_framework_simplejwt.tokens import RefreshToken

    user = UserFactory()
    pair = _pair(user)
    stale_refresh = str(RefreshToken.for_user(user))  # as if rotated at the moment of the change
    user.set_password("a-new-pass-word-456")
    user.save()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {pair['access']}")
    assert client.get("/api/bookings/").status_code == 401
    # Not blacklisted (made after the revocation ran), but it carries the old password's digest.
    from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

    BlacklistedToken.objects.filter(token__in=OutstandingToken.objects.filter(user=user)).delete()
    assert _refresh(stale_refresh).status_code == 401
