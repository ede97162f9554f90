"""A donation paid, refunded and reconciled through the app's own API, webhook and admin, against
the Stripe emulator: what any project that installs `payments` gets."""

import json

import pytest
from django.contrib.auth.models import Permission
from django.dispatch import receiver

from payments.models import Payment, Refund, WebhookEvent
from payments.reconcile import payments_reconcile
from payments.signals import payment_succeeded
from payments_tests.factories import DonationFactory, UserFactory
from stripe_emulator.harness import make_event, sign_payload

pytestmark = [pytest.mark.django_db, pytest.mark.emulator]

GOOD, THREE_D_SECURE, DECLINED = "4242424242424242", "4000002500003155", "4000000000000002"


@pytest.fixture
def donor_client(client):
    donation = DonationFactory(amount=2500)
    client.force_login(donation.donor)
    return client, donation


def _pay(client, donation, card: str, **extra):
    return client.post(
        f"/api/donations/{donation.pk}/payment/intent/",
        {"payment_method_id": card, "confirm_immediately": True, **extra},
        content_type="application/json",
    )


def test_a_card_pays_a_donation_once_and_the_host_hears_it_once(
    stripe_env, donor_client, django_capture_on_commit_callbacks
):
    client, donation = donor_client
    heard = []

    @receiver(payment_succeeded, weak=False)
    def record(sender, payment, **kwargs):
        heard.append(payment.payable)

    try:
        with django_capture_on_commit_callbacks(execute=True):
            answer = _pay(client, donation, stripe_env.card(GOOD))
            again = _pay(client, donation, stripe_env.card(GOOD))  # a second click
    finally:
        payment_succeeded.disconnect(record)
    assert answer.status_code == 200, answer.content
    assert answer.json()["payment"]["status"] == "succeeded"
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_paid"
    assert heard == [donation]
    assert len(stripe_env.api("GET", "/v1/payment_intents")["data"]) == 1


def test_three_d_secure_then_confirm(stripe_env, donor_client):
    client, donation = donor_client
    started = _pay(client, donation, stripe_env.card(THREE_D_SECURE)).json()
    assert started["requires_action"] and started["client_secret"]
    stripe_env.authenticate(started["payment"]["payment_intent"], started["client_secret"])
    confirmed = client.post(
        f"/api/donations/{donation.pk}/payment/confirm/", {}, content_type="application/json"
    )
    assert confirmed.status_code == 200 and confirmed.json()["payment"]["status"] == "succeeded"


def test_a_decline_says_why_and_another_card_pays(stripe_env, donor_client):
    client, donation = donor_client
    declined = _pay(client, donation, stripe_env.card(DECLINED))
    assert declined.status_code == 402
    assert declined.json()["error"]["code"] == "card_declined"
    assert "Traceback" not in declined.content.decode()
    retried = client.post(
        f"/api/donations/{donation.pk}/payment/retry/",
        {"payment_method_id": stripe_env.card(GOOD)},
        content_type="application/json",
    )
    assert retried.status_code == 200 and retried.json()["payment"]["status"] == "succeeded"
    assert Payment.objects.for_payable(donation).sales().count() == 1


def test_the_signed_webhook_is_stored_once_and_processed(
    stripe_env, donor_client, django_capture_on_commit_callbacks
):
    client, donation = donor_client
    _pay(client, donation, stripe_env.card(GOOD))
    payment = Payment.objects.get()
    intent = stripe_env.api("GET", f"/v1/payment_intents/{payment.stripe_payment_intent_id}")
    body = json.dumps(make_event("payment_intent.succeeded", intent)).encode()
    headers = {"HTTP_STRIPE_SIGNATURE": sign_payload(body, "whsec_payments_tests")}
    with django_capture_on_commit_callbacks(execute=True):  # the task runs eagerly on commit
        first = client.post("/api/webhooks/stripe/", body, content_type="application/json", **headers)
        second = client.post("/api/webhooks/stripe/", body, content_type="application/json", **headers)
    assert first.json() == {"received": True, "duplicate": False}
    assert second.json() == {"received": True, "duplicate": True}
    assert WebhookEvent.objects.get().status == "processed"
    forged = client.post(
        "/api/webhooks/stripe/",
        body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign_payload(body, "whsec_wrong"),
    )
    assert forged.status_code == 400


def test_staff_refund_in_the_admin_after_a_confirmation_and_reconciliation_agrees(
    stripe_env, donor_client, client
):
    _client, donation = donor_client
    _pay(_client, donation, stripe_env.card(GOOD))
    payment = Payment.objects.get()
    staff = UserFactory(username="treasurer", is_staff=True)
    staff.user_permissions.add(
        Permission.objects.get(codename="refund_payment"), Permission.objects.get(codename="view_payment")
    )
    client.force_login(staff)
    url = f"/admin/payments/payment/{payment.pk}/refund/"
    form = client.get(url)
    assert form.status_code == 200 and b"25.00" in form.content  # the app's own template
    review = client.post(url, {"amount": "10.00", "reason": "requested_by_customer"})
    assert review.status_code == 200 and not Refund.objects.exists()  # asks first
    done = client.post(url, {"amount": "10.00", "reason": "requested_by_customer", "confirmed": "yes"})
    assert done.status_code == 302
    refund = Refund.objects.get()
    assert (refund.amount, refund.status) == (1000, "succeeded")
    assert [r["amount"] for r in stripe_env.api("GET", "/v1/refunds")["data"]] == [1000]
    report = payments_reconcile(everything=True)
    # Only the events no webhook brought here (none is configured in this test) are news to it.
    assert report.unresolved == []
    assert {f.kind for f in report.findings} <= {"missed_event"}
