"""The emulator refuses what Stripe refuses and sends what Stripe sends (stripe_emulator/strict.py)."""

import time

import pytest
import requests

from tests.conftest import wait_for

pytestmark = [pytest.mark.emulator]

SECRET = {"Authorization": "Bearer sk_test_suite"}


def _post(stripe, path, headers=SECRET, **data):
    return requests.post(f"{stripe.url}{path}", data=data, headers=headers, timeout=5)


def _error(response):
    return response.json()["error"]


@pytest.mark.parametrize(
    ("amount", "currency", "code"),
    [
        ("12345", "kwd", "invalid_amount"),  # 12.345 KWD: three decimals must end in 0
        ("49", "jpy", "amount_too_small"),  # Stripe's minimum is 50 JPY
        ("29", "gbp", "amount_too_small"),  # and 0.30 GBP
        ("49", "usd", "amount_too_small"),
        ("100000000", "usd", "amount_too_large"),  # nine digits
    ],
)
def test_amounts_stripe_refuses(stripe_env, amount, currency, code):
    response = _post(stripe_env, "/v1/payment_intents", amount=amount, currency=currency)
    assert response.status_code == 400
    assert (_error(response)["code"], _error(response)["param"]) == (code, "amount")


@pytest.mark.parametrize(
    ("amount", "currency"), [("12340", "kwd"), ("50", "jpy"), ("30", "gbp"), ("50", "usd")]
)
def test_amounts_stripe_accepts(stripe_env, amount, currency):
    assert _post(stripe_env, "/v1/payment_intents", amount=amount, currency=currency).status_code == 200


def test_same_key_replays_other_parameters_are_refused_and_keys_last_24_hours(stripe_env):
    key = {**SECRET, "Idempotency-Key": "installation-x:payment-1:create"}
    first = _post(stripe_env, "/v1/customers", headers=key, email="a@example.com")
    replay = _post(stripe_env, "/v1/customers", headers=key, email="a@example.com")
    assert replay.json()["id"] == first.json()["id"] and replay.headers["Idempotent-Replayed"] == "true"
    other = _post(stripe_env, "/v1/customers", headers=key, email="b@example.com")
    assert other.status_code == 400 and _error(other)["type"] == "idempotency_error"
    # A day later Stripe has forgotten the key.
    fingerprint, *rest, _seen = stripe_env._replays["installation-x:payment-1:create"]
    stripe_env._replays["installation-x:payment-1:create"] = (fingerprint, *rest, time.time() - 86_401)
    later = _post(stripe_env, "/v1/customers", headers=key, email="b@example.com")
    assert later.status_code == 200 and later.json()["id"] != first.json()["id"]


def test_list_filters_are_applied_newest_first(stripe_env):
    old = stripe_env.api("POST", "/v1/payment_intents", amount="1000", currency="usd")
    time.sleep(1.1)
    new = stripe_env.api("POST", "/v1/payment_intents", amount="1000", currency="usd")
    listed = stripe_env.api("GET", "/v1/payment_intents", **{"created[gte]": str(new["created"])})["data"]
    assert [i["id"] for i in listed] == [new["id"]]
    assert [i["id"] for i in stripe_env.api("GET", "/v1/payment_intents")["data"]] == [new["id"], old["id"]]


def test_the_events_stripe_sends(stripe_env):
    card = stripe_env.card()
    paid = stripe_env.api(
        "POST", "/v1/payment_intents", amount="2000", currency="usd", payment_method=card, confirm="true"
    )
    stripe_env.api("POST", "/v1/refunds", payment_intent=paid["id"], amount="500")
    open_intent = stripe_env.api("POST", "/v1/payment_intents", amount="2000", currency="usd")
    stripe_env.api("POST", f"/v1/payment_intents/{open_intent['id']}/cancel")
    types = {e["type"] for e in stripe_env.api("GET", "/v1/events", limit="100")["data"]}
    assert {
        "payment_intent.succeeded",
        "charge.succeeded",
        "refund.created",
        "charge.refunded",
        "payment_intent.canceled",
    } <= types


def test_declined_cards_carry_stripes_error(stripe_env):
    card = stripe_env.card("4000000000009995")
    response = _post(
        stripe_env, "/v1/payment_intents", amount="2000", currency="usd", payment_method=card, confirm="true"
    )
    error = _error(response)
    assert response.status_code == 402
    assert (error["type"], error["code"], error["decline_code"]) == (
        "card_error",
        "card_declined",
        "insufficient_funds",
    )
    assert error["payment_intent"]["status"] == "requires_payment_method"
    assert error["payment_intent"]["last_payment_error"]["decline_code"] == "insufficient_funds"


def test_checkout_session_rules(stripe_env):
    base = {
        "mode": "payment",
        "line_items[0][quantity]": "1",
        "line_items[0][price_data][currency]": "usd",
        "line_items[0][price_data][unit_amount]": "2000",
        "line_items[0][price_data][product_data][name]": "Seat",
        "success_url": "http://site.test/ok",
    }
    too_soon = _post(stripe_env, "/v1/checkout/sessions", **base, expires_at=str(int(time.time()) + 29 * 60))
    assert too_soon.status_code == 400 and _error(too_soon)["param"] == "expires_at"
    too_late = _post(
        stripe_env, "/v1/checkout/sessions", **base, expires_at=str(int(time.time()) + 25 * 3600)
    )
    assert too_late.status_code == 400
    session = _post(stripe_env, "/v1/checkout/sessions", **base).json()
    assert session["status"] == "open" and session["url"]
    assert _post(stripe_env, f"/v1/checkout/sessions/{session['id']}/expire").json()["status"] == "expired"
    again = _post(stripe_env, f"/v1/checkout/sessions/{session['id']}/expire")
    assert again.status_code == 400
    types = [e["type"] for e in stripe_env.api("GET", "/v1/events")["data"]]
    assert "checkout.session.expired" in types


def test_publishable_key_only_reaches_what_stripe_js_may(stripe_env):
    browser = {"key": "pk_test_suite"}
    intent = stripe_env.api("POST", "/v1/payment_intents", amount="2000", currency="usd")
    listed = requests.get(f"{stripe_env.url}/v1/payment_intents", params=browser, timeout=5)
    assert listed.status_code == 401
    wrong_secret = _post(
        stripe_env, f"/v1/payment_intents/{intent['id']}/confirm", headers={}, **browser, client_secret="x"
    )
    assert wrong_secret.status_code == 404
    confirmed = _post(
        stripe_env,
        f"/v1/payment_intents/{intent['id']}/confirm",
        headers={},
        **browser,
        client_secret=intent["client_secret"],
        **{
            "payment_method_data[type]": "card",
            "payment_method_data[card][number]": "4242424242424242",
            "payment_method_data[card][exp_month]": "12",
            "payment_method_data[card][exp_year]": "2034",
            "payment_method_data[card][cvc]": "123",
        },
    )
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "succeeded"


def test_a_declined_intent_takes_another_card(stripe_env):
    declined = _post(
        stripe_env,
        "/v1/payment_intents",
        amount="2000",
        currency="usd",
        payment_method=stripe_env.card("4000000000000002"),
        confirm="true",
    ).json()["error"]["payment_intent"]
    assert declined["payment_method"] is None  # Stripe detaches the declined card
    stripe_env.api("POST", f"/v1/payment_intents/{declined['id']}", payment_method=stripe_env.card())
    paid = stripe_env.api("POST", f"/v1/payment_intents/{declined['id']}/confirm")
    assert paid["status"] == "succeeded" and paid["last_payment_error"] is None


def test_hosted_checkout_page_pays_and_returns_to_the_site(stripe_env):
    session = _post(
        stripe_env,
        "/v1/checkout/sessions",
        mode="payment",
        success_url="http://site.test/ok?session={CHECKOUT_SESSION_ID}",
        cancel_url="http://site.test/no",
        **{
            "line_items[0][quantity]": "1",
            "line_items[0][price_data][currency]": "usd",
            "line_items[0][price_data][unit_amount]": "2000",
            "line_items[0][price_data][product_data][name]": "Seat",
        },
    ).json()
    page = requests.get(session["url"], timeout=5)
    assert page.status_code == 200 and "Pay" in page.text
    declined = requests.post(session["url"], data={"number": "4000 0000 0000 9995"}, timeout=5)
    assert "insufficient funds" in declined.text
    paid = requests.post(
        session["url"], data={"number": "4242424242424242"}, allow_redirects=False, timeout=5
    )
    assert paid.status_code == 303
    assert paid.headers["Location"] == f"http://site.test/ok?session={session['id']}"
    done = stripe_env.api("GET", f"/v1/checkout/sessions/{session['id']}")
    assert (done["status"], done["payment_status"]) == ("complete", "paid") and done["payment_intent"]


@pytest.mark.django_db
def test_a_dispute_on_demand_reaches_the_payment(stripe_env, django_capture_on_commit_callbacks):
    from bookings.services import booking_pay
    from payments.models import Payment
    from payments.reconcile import payments_reconcile
    from tests.factories import BookingFactory

    payment = booking_pay(
        booking_id=BookingFactory().pk, payment_method_id=stripe_env.card(), confirm=True
    ).payment
    dispute = stripe_env.open_dispute(payment.stripe_charge_id)
    with django_capture_on_commit_callbacks(execute=True):
        payments_reconcile(everything=True)  # reads charge.dispute.created from the Events API
    assert Payment.objects.get(pk=payment.pk).status == "disputed"
    stripe_env.close_dispute(dispute, status="won")
    with django_capture_on_commit_callbacks(execute=True):
        payments_reconcile(everything=True)
    assert Payment.objects.get(pk=payment.pk).status == "succeeded"


class _Endpoint:
    """A webhook endpoint on loopback answering the n-th delivery of each event with `answers[n]`
    (the last one from then on), recording what it was sent."""

    def __init__(self, answers: list[int]):
        import http.server
        import json
        import threading

        self.received: list[tuple[float, bytes, str]] = []
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                event_id = json.loads(body)["id"]
                earlier = sum(json.loads(r[1])["id"] == event_id for r in endpoint.received)
                endpoint.received.append((time.monotonic(), body, self.headers["Stripe-Signature"]))
                self.send_response(answers[min(earlier, len(answers) - 1)])
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def of(self, event_type: str, object_id: str) -> list[tuple[float, bytes, str]]:
        """The deliveries of `event_type` about `object_id` (an earlier test's events may come too)."""
        import json

        return [
            r
            for r in self.received
            if (json.loads(r[1])["type"], json.loads(r[1])["data"]["object"]["id"]) == (event_type, object_id)
        ]


def test_a_failed_delivery_is_sent_again_later_signed_anew(stripe_env):
    """Stripe retries a delivery that got no 2xx, with back off, each attempt signed with its own
    time; once one is answered 2xx nothing more is sent."""
    import stripe

    with (
        _Endpoint([503, 302, 200]) as endpoint,
        stripe_env.webhook_retries(first_delay=1.0),
        stripe_env.webhooks_to(endpoint.url, secret="whsec_retry"),
    ):
        card = stripe_env.card()
        paid = stripe_env.api(
            "POST", "/v1/payment_intents", amount="2000", currency="usd", payment_method=card, confirm="true"
        )
        wait_for(lambda: len(endpoint.of("payment_intent.succeeded", paid["id"])) == 3)
        time.sleep(2.5)  # the next retry would have come by now
    attempts = endpoint.of("payment_intent.succeeded", paid["id"])
    assert len(attempts) == 3
    (first, body, _), (second, _, _), (third, _, _) = attempts
    assert 0.9 < second - first < 3 and 1.8 < third - second < 5  # 1 s, then twice as late
    stamps = []
    for _, sent, signature in attempts:
        assert sent == body
        stripe.WebhookSignature.verify_header(sent.decode(), signature, "whsec_retry", tolerance=300)
        stamps.append(int(signature.split(",")[0].removeprefix("t=")))
    assert stamps == sorted(stamps) and stamps[-1] > stamps[0]  # each attempt signed at its own time
    event_id = __import__("json").loads(body)["id"]
    assert [d["status"] for d in stripe_env.deliveries(event_id) if d["endpoint"] == "tests"] == [
        503,
        302,
        200,
    ]


def test_a_delivery_that_always_fails_is_retried_three_times_then_dropped(stripe_env):
    with (
        _Endpoint([500]) as endpoint,
        stripe_env.webhook_retries(first_delay=0.2),
        stripe_env.webhooks_to(endpoint.url),
    ):
        customer = stripe_env.api("POST", "/v1/customers", email="retry@example.com")
        wait_for(lambda: len(endpoint.of("customer.created", customer["id"])) == 4)
        time.sleep(2.0)  # a fifth would have come by now (0.2, 0.4, 0.8, then 1.6 s)
    assert len(endpoint.of("customer.created", customer["id"])) == 4


def test_an_endpoint_removed_gets_no_more_retries(stripe_env):
    with _Endpoint([500]) as endpoint, stripe_env.webhook_retries(first_delay=0.5):
        with stripe_env.webhooks_to(endpoint.url):
            customer = stripe_env.api("POST", "/v1/customers", email="gone@example.com")
            wait_for(lambda: len(endpoint.of("customer.created", customer["id"])) == 1)
        time.sleep(1.5)
    assert len(endpoint.of("customer.created", customer["id"])) == 1
