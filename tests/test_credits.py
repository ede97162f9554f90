"""Credit packages paid through the payments app, against the emulator: credits added once however
often (and in whatever order) Stripe's events arrive, taken back pro rata on a refund, never
overdrawn."""

import json
import random
import threading

import pytest
import requests
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from credits.models import CreditPackage, CreditPurchase, Wallet, WalletEntry
from credits.services import credits_for_refunded
from payments.models import Payment, WebhookEvent
from payments.webhooks import webhook_event_process
from stripe_emulator.harness import sign_payload
from tests.factories import UserFactory

pytestmark = [pytest.mark.emulator, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def packages():
    return [
        CreditPackage.objects.create(name="Basic", credits=100, price=1000, sort_order=1),
        CreditPackage.objects.create(name="Standard", credits=500, price=4500, sort_order=2),
    ]


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _balance(user) -> int:
    wallet = Wallet.objects.filter(user=user).first()
    entries = WalletEntry.objects.filter(wallet__user=user)
    assert sum(e.amount for e in entries) == (wallet.balance if wallet else 0), "ledger and balance differ"
    return wallet.balance if wallet else 0


def _run_at_once(target, items):
    barrier = threading.Barrier(len(items))
    results = []

    def run(item):
        try:
            barrier.wait()
            results.append(target(item))
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def _deliver(event: dict) -> int:
    payload = json.dumps(event).encode()
    return (
        Client()
        .post(
            "/api/webhooks/stripe/",
            data=payload,
            content_type="application/json",
            HTTP_STRIPE_SIGNATURE=sign_payload(payload, "whsec_test_primary"),
        )
        .status_code
    )


def _events_of(stripe_env, intent_id: str) -> list[dict]:
    events = stripe_env.api("GET", "/v1/events", limit="100")["data"]
    return [e for e in events if e["data"]["object"].get("id") == intent_id]


@pytest.mark.parametrize("card", ["4242424242424242", "4000002500003155"])
def test_each_package_bought_once_whatever_the_events_do(stripe_env, packages, card):
    user = UserFactory()
    client = _client(user)
    expected = 0
    for package in packages:
        started = client.post("/api/credits/purchases/", {"package": package.pk}, format="json")
        assert started.status_code == 201, started.content
        body = started.json()
        assert body["purchase"]["credits"] == package.credits and body["client_secret"]
        assert body["payment"]["amount"]["minor"] == package.price if "amount" in body["payment"] else True
        # The browser pays with Stripe.js: our server hears of it only through events.
        intent_id = body["client_secret"].split("_secret_")[0]
        method = stripe_env.card(card)
        confirmed = requests.post(  # as Stripe.js confirms, with the publishable key
            f"{stripe_env.url}/v1/payment_intents/{intent_id}/confirm",
            data={"key": "pk_test_suite", "client_secret": body["client_secret"], "payment_method": method},
            timeout=30,
        )
        assert confirmed.status_code == 200, confirmed.text
        if card.endswith("3155"):
            stripe_env.authenticate(intent_id, body["client_secret"])
        events = _events_of(stripe_env, intent_id)
        succeeded = [e for e in events if e["type"] == "payment_intent.succeeded"]
        assert len(succeeded) == 1
        # The success ten times at once, then every event of the intent in a shuffled order.
        assert set(_run_at_once(_deliver, succeeded * 10)) == {200}
        shuffled = random.sample(events, len(events))
        assert all(200 <= _deliver(e) < 300 for e in shuffled)
        rows = list(WebhookEvent.objects.filter(status="pending").values_list("pk", flat=True))
        _run_at_once(lambda pk: webhook_event_process(event_id=pk), rows * 2)
        expected += package.credits
        purchase = CreditPurchase.objects.get(pk=body["purchase"]["id"])
        assert purchase.status == "paid"
        assert WalletEntry.objects.filter(purchase=purchase, kind="purchase").count() == 1
        assert _balance(user) == expected
    wallet = _client(user).get("/api/credits/wallet/").json()
    assert wallet["balance"] == expected
    assert [e["kind"] for e in wallet["entries"]] == ["purchase", "purchase"]


def _buy(stripe_env, user, package) -> CreditPurchase:
    answer = _client(user).post(
        "/api/credits/purchases/",
        {"package": package.pk, "payment_method_id": stripe_env.card(), "confirm_immediately": True},
        format="json",
    )
    assert answer.status_code == 201, answer.content
    assert answer.json()["payment"]["status"] == "succeeded"
    return CreditPurchase.objects.get(pk=answer.json()["purchase"]["id"])


def test_half_refunded_takes_back_half_and_spent_credits_are_not_refunded(stripe_env, packages):
    user = UserFactory()
    standard = packages[1]
    purchase = _buy(stripe_env, user, standard)
    assert _balance(user) == 500
    client = _client(user)
    refund_url = f"/api/credits/purchases/{purchase.pk}/payment/refund/"
    half = client.post(refund_url, {"amount": "22.50"}, format="json")
    assert half.status_code == 201, half.content
    assert _balance(user) == 250
    assert (
        client.post("/api/credits/spend/", {"amount": 200, "reason": "a workshop"}, format="json").status_code
        == 200
    )
    assert _balance(user) == 50
    refused = client.post(refund_url, {"amount": "22.50"}, format="json")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "credits_spent"
    assert Payment.objects.get(object_id=str(purchase.pk)).refunded_amount() == 2250  # no money moved

    # Staff who may refund are told too, and may force it: the wallet goes to zero and the rest
    # is a recorded shortfall.
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="refund_payment"))
    told = _client(staff).post(refund_url, {}, format="json")
    assert told.status_code == 409 and "staff may force it" in told.json()["error"]["message"]
    forced = _client(staff).post(refund_url, {"force": True}, format="json")
    assert forced.status_code == 201, forced.content
    assert _balance(user) == 0
    last = WalletEntry.objects.filter(purchase=purchase, kind="refund").order_by("-id").first()
    assert (last.amount, last.shortfall) == (-50, 200)
    purchase.refresh_from_db()
    assert purchase.status == "refunded"


def test_refunds_round_in_the_users_disfavour_by_less_than_a_credit(packages):
    purchase = CreditPurchase(credits=100, price=1000)
    assert credits_for_refunded(purchase, 333) == 34  # 33.3 credits: 34 taken back
    assert credits_for_refunded(purchase, 1000) == 100
    assert credits_for_refunded(purchase, 0) == 0


def test_twenty_concurrent_spends_never_overdraw(stripe_env, packages):
    user = UserFactory()
    _buy(stripe_env, user, packages[0])
    assert _balance(user) == 100
    answers = _run_at_once(
        lambda n: _client(user).post(
            "/api/credits/spend/", {"amount": 10, "reason": f"spend {n}"}, format="json"
        ),
        list(range(20)),
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 10 + [409] * 10
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 409} == {"insufficient_credits"}
    assert _balance(user) == 0
    assert WalletEntry.objects.filter(wallet__user=user, kind="spend").count() == 10


def test_a_retried_spend_spends_once(stripe_env, packages):
    user = UserFactory()
    _buy(stripe_env, user, packages[0])
    client = _client(user)
    body = {"amount": 30, "reason": "a class", "reference": "order-17"}
    first = client.post("/api/credits/spend/", body, format="json")
    again = client.post("/api/credits/spend/", body, format="json")
    assert first.status_code == again.status_code == 200
    assert first.json()["entry"]["id"] == again.json()["entry"]["id"]
    assert _balance(user) == 70
    other = client.post("/api/credits/spend/", {**body, "amount": 40}, format="json")
    assert other.status_code == 409 and other.json()["error"]["code"] == "reference_reused"


def test_bad_input_is_a_clear_error(packages):
    user = UserFactory()
    client = _client(user)
    unknown = client.post("/api/credits/purchases/", {"package": 999999}, format="json")
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "package"
    assert client.post("/api/credits/spend/", {"amount": 0}, format="json").status_code == 400
    assert client.post("/api/credits/spend/", {"amount": 5}, format="json").json()["error"]["code"] == (
        "insufficient_credits"
    )
    assert APIClient().get("/api/credits/wallet/").status_code == 401
    assert client.get("/api/credits/wallet/?before=null").status_code == 400
    listed = APIClient().get("/api/credits/packages/").json()
    assert [p["name"] for p in listed] == ["Basic", "Standard"]
    assert listed[0]["price_display"] == "10.00 USD"


def test_another_users_purchase_is_not_found(stripe_env, packages):
    owner, other = UserFactory(), UserFactory()
    purchase = _buy(stripe_env, owner, packages[0])
    assert _client(other).get(f"/api/credits/purchases/{purchase.pk}/payment/status/").status_code == 404
    assert (
        _client(other)
        .post(f"/api/credits/purchases/{purchase.pk}/payment/refund/", {}, format="json")
        .status_code
        == 404
    )


def test_the_schema_lists_the_credit_endpoints():
    schema = APIClient().get("/api/schema/?format=json").json()
    for path in (
        "/api/credits/packages/",
        "/api/credits/purchases/",
        "/api/credits/purchases/{purchase_pk}/payment/confirm/",
        "/api/credits/purchases/{purchase_pk}/payment/refund/",
        "/api/credits/wallet/",
        "/api/credits/spend/",
    ):
        assert path in schema["paths"], path


def test_staff_adjust_a_wallet_in_the_admin_and_it_is_logged(stripe_env, packages):
    user = UserFactory()
    _buy(stripe_env, user, packages[0])
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_wallet", "adjust_wallet", "view_walletentry"])
    )
    client = Client()
    client.force_login(staff)
    wallet = Wallet.objects.get(user=user)
    page = client.get(f"/admin/credits/wallet/{wallet.pk}/change/")
    assert page.status_code == 200 and b"Adjust credits" in page.content
    done = client.post(
        f"/admin/credits/wallet/{wallet.pk}/adjust/", {"amount": "-30", "reason": "goodwill undone"}
    )
    assert done.status_code == 302
    assert _balance(user) == 70
    entry = WalletEntry.objects.get(wallet=wallet, kind="adjustment")
    assert (entry.amount, entry.created_by, entry.reason) == (-30, staff, "goodwill undone")
    assert LogEntry.objects.filter(user=staff, object_id=str(wallet.pk)).exists()
    too_much = client.post(f"/admin/credits/wallet/{wallet.pk}/adjust/", {"amount": "-500", "reason": "x"})
    assert too_much.status_code == 200 and b"Only 70 credits are left" in too_much.content
    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_wallet"))
    client.force_login(viewer)
    assert (
        client.post(f"/admin/credits/wallet/{wallet.pk}/adjust/", {"amount": "5", "reason": "x"}).status_code
        == 403
    )


def test_the_wallet_page_buys_through_the_checkout_page(packages):
    user = UserFactory()
    client = Client()
    client.force_login(user)
    page = client.get("/credits/")
    assert page.status_code == 200 and b"Buy for 10.00 USD" in page.content
    assert b'<strong id="balance">0 credits</strong>' in page.content
    bought = client.post(f"/credits/buy/{packages[0].pk}/")
    purchase = CreditPurchase.objects.get(user=user)
    assert bought.status_code == 302 and bought["Location"] == f"/credits/purchases/{purchase.pk}/pay/"
    checkout = client.get(bought["Location"])
    assert checkout.status_code == 200 and b"Pay 10.00 USD" in checkout.content
    from urllib.parse import urlsplit

    from django.conf import settings

    stripe_js = urlsplit(settings.STRIPE_JS_URL)
    policy = checkout["Content-Security-Policy"]
    assert f"{stripe_js.scheme}://{stripe_js.netloc}" in policy.split("script-src", 1)[1].split(";")[0]
    other = Client()
    other.force_login(UserFactory())
    assert other.get(bought["Location"]).status_code == 404
    assert Client().get("/credits/").status_code == 302  # to the login page


def _refusing_wallet_entries():
    """A trigger that refuses every new wallet entry, as a database down for a moment would."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION refuse_entry() RETURNS trigger AS $$ BEGIN"
            " RAISE EXCEPTION 'the database is away'; END $$ LANGUAGE plpgsql"
        )
        cursor.execute(
            "CREATE TRIGGER refuse_entry BEFORE INSERT ON credits_walletentry FOR EACH ROW"
            " EXECUTE FUNCTION refuse_entry()"
        )


def _accepting_wallet_entries():
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER refuse_entry ON credits_walletentry")
        cursor.execute("DROP FUNCTION refuse_entry()")


def test_the_sweep_adds_and_takes_back_what_a_failed_receiver_did_not(stripe_env, packages):
    from credits.services import credits_sweep

    user = UserFactory()
    _refusing_wallet_entries()
    try:
        purchase = _buy(stripe_env, user, packages[1])  # charged; its credits could not be added
    finally:
        _accepting_wallet_entries()
    assert _balance(user) == 0
    assert credits_sweep() == {"added": 1, "taken_back": 0}
    assert _balance(user) == 500
    assert credits_sweep() == {"added": 0, "taken_back": 0}

    # A refund made in Stripe's dashboard, its event applied while wallet entries are refused.
    intent_id = Payment.objects.get(object_id=str(purchase.pk)).stripe_payment_intent_id
    stripe_env.api("POST", "/v1/refunds", payment_intent=intent_id, amount="900")
    events = [
        e for e in stripe_env.api("GET", "/v1/events", limit="100")["data"] if e["type"] == "charge.refunded"
    ]
    _refusing_wallet_entries()
    try:
        assert all(_deliver(e) == 200 for e in events)
        for row in WebhookEvent.objects.filter(status="pending"):
            webhook_event_process(event_id=row.pk)
    finally:
        _accepting_wallet_entries()
    assert _balance(user) == 500  # the take-back was refused with the entry
    assert credits_sweep() == {"added": 0, "taken_back": 1}
    assert _balance(user) == 400  # 9.00 of 45.00: a fifth of 500
    assert credits_sweep() == {"added": 0, "taken_back": 0}


def test_emails_on_purchase_and_refund_go_out_once(stripe_env, packages, mailoutbox):
    from credits.models import CreditEmail
    from credits.tasks import send_credit_email

    user = UserFactory(email="buyer@example.com")
    purchase = _buy(stripe_env, user, packages[1])
    assert list(CreditEmail.objects.values_list("kind", "status")) == [("purchased", "pending")]
    for _ in range(2):  # as the worker runs it, and a duplicate delivery sends nothing
        send_credit_email.apply(args=(purchase.pk, "purchased"))
    assert [m.subject for m in mailoutbox] == ["500 credits are in your wallet"]
    assert "Your balance is now 500 credits" in mailoutbox[0].body

    refund_url = f"/api/credits/purchases/{purchase.pk}/payment/refund/"
    refund_id = _client(user).post(refund_url, {"amount": "9.00"}, format="json").json()["refund"]["id"]
    send_credit_email.apply(args=(purchase.pk, f"refund:{refund_id}"))
    refunded = mailoutbox[1]
    assert refunded.subject == "Refund for Standard" and refunded.to == ["buyer@example.com"]
    assert "We have refunded 9.00 USD" in refunded.body and "100 credits were taken back" in refunded.body
    assert set(CreditEmail.objects.values_list("status", flat=True)) == {"sent"}


def test_a_purchase_whose_card_is_declined_is_named_in_the_error(stripe_env, packages):
    user = UserFactory()
    answer = _client(user).post(
        "/api/credits/purchases/",
        {
            "package": packages[0].pk,
            "payment_method_id": stripe_env.card("4000000000009995"),
            "confirm_immediately": True,
        },
        format="json",
    )
    assert answer.status_code == 402
    body = answer.json()
    assert body["error"]["decline_code"] == "insufficient_funds"
    purchase_id = body["purchase"]["id"]
    retried = _client(user).post(
        f"/api/credits/purchases/{purchase_id}/payment/retry/",
        {"payment_method_id": stripe_env.card()},
        format="json",
    )
    assert retried.status_code == 200 and retried.json()["payment"]["status"] == "succeeded"
    assert _balance(user) == 100


def test_a_refund_that_fails_gives_the_credits_back(stripe_env, packages):
    user = UserFactory()
    purchase = _buy(stripe_env, user, packages[1])
    refund_url = f"/api/credits/purchases/{purchase.pk}/payment/refund/"
    refund_id = _client(user).post(refund_url, {"amount": "9.00"}, format="json").json()["refund"]["id"]
    assert _balance(user) == 400
    from payments.models import Refund

    stripe_env.fail_refund(Refund.objects.get(pk=refund_id).stripe_refund_id)  # refund.failed
    events = [
        e for e in stripe_env.api("GET", "/v1/events", limit="100")["data"] if e["type"] == "refund.failed"
    ]
    assert all(_deliver(e) == 200 for e in events)
    for row in WebhookEvent.objects.filter(status="pending"):
        webhook_event_process(event_id=row.pk)
    assert _balance(user) == 500
    entry = WalletEntry.objects.get(kind="refund_reversed")
    assert (entry.amount, entry.refund_id) == (100, refund_id)
    purchase.refresh_from_db()
    assert purchase.status == "paid"


def test_a_refunded_duplicate_payment_leaves_the_credits(stripe_env, packages):
    """A second payment for a paid purchase is refunded as unwanted: the purchase's credits stay."""
    from payments import services as payment_services
    from payments.gateway import get_gateway

    user = UserFactory()
    purchase = _buy(stripe_env, user, packages[0])
    # A second intent for the same purchase paid at Stripe (another tab), its success applied.
    duplicate = Payment.objects.create(
        content_type=Payment.objects.get(object_id=str(purchase.pk)).content_type,
        object_id=str(purchase.pk), owner=user, subtotal=1000, fee=0, total=1000, currency="usd",
        attempt=2, idempotency_key=f"duplicate-{purchase.pk}",
    )  # fmt: skip
    intent = stripe_env.api(
        "POST", "/v1/payment_intents", amount="1000", currency="usd", payment_method=stripe_env.card(),
        confirm="true", **{"metadata[payment_id]": str(duplicate.pk)},
    )  # fmt: skip
    payment_services.payment_sync_intent(
        intent=get_gateway().intent_from_object(intent), payment_id=duplicate.pk
    )
    duplicate.refresh_from_db()
    assert duplicate.unwanted_reason == "duplicate"
    for pending in duplicate.refunds.filter(status="pending", stripe_refund_id=""):
        payment_services.refund_submit(refund=pending)  # as the task the sync enqueued does
    assert Payment.objects.get(pk=duplicate.pk).status == "refunded"
    assert _balance(user) == 100
    purchase.refresh_from_db()
    assert purchase.status == "paid"


def test_a_spend_cannot_slip_between_a_refund_and_its_take_back(stripe_env, packages):
    """The refund's check and its take-back hold the wallet's lock: a spend racing it waits, and
    then finds the credits gone (or the refund finds them spent): never both."""
    user = UserFactory()
    purchase = _buy(stripe_env, user, packages[0])
    refund_url = f"/api/credits/purchases/{purchase.pk}/payment/refund/"
    stripe_env.slow_after_forward("POST", "/v1/refunds", delay=1.0)

    def act(what):
        client = _client(user)
        if what == "refund":
            return client.post(refund_url, {}, format="json").status_code
        return client.post("/api/credits/spend/", {"amount": 100}, format="json").status_code

    outcomes = sorted(_run_at_once(act, ["refund", "spend"]))
    assert outcomes in ([201, 409], [200, 409]), outcomes  # one wins, the other is refused
    assert _balance(user) == 0
    shortfalls = list(WalletEntry.objects.filter(kind="refund").values_list("shortfall", flat=True))
    assert shortfalls in ([], [0])  # never a refund of credits that were spent
