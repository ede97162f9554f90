"""Retention: old webhook payloads and personal data in payment records are pruned, what accounting
and reconciliation need stays, and a pruned event cannot be replayed."""

import io
import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from payments.models import Payment, WebhookEvent
from payments.retention import payment_data_prune
from payments.states import PaymentStatus
from stripe_emulator.harness import make_event, sign_payload, stripe_object
from tests.factories import PaymentFactory, UserFactory

pytestmark = pytest.mark.django_db


def _received(days_ago: int, *, status: str = "processed") -> WebhookEvent:
    customer = {**stripe_object("customer"), "email": "ada@example.com", "name": "Ada Lovelace"}
    event = make_event("customer.updated", customer)
    row = WebhookEvent.objects.create(
        stripe_event_id=event["id"], type=event["type"], payload=event, status=status
    )
    WebhookEvent.objects.filter(pk=row.pk).update(received_at=timezone.now() - timedelta(days=days_ago))
    return WebhookEvent.objects.get(pk=row.pk)


def _paid(days_ago: int, **fields) -> Payment:
    fields.setdefault("status", PaymentStatus.SUCCEEDED)
    payment = PaymentFactory(
        stripe_payment_intent_id=f"pi_old_{days_ago}",
        stripe_charge_id=f"ch_old_{days_ago}",
        card_brand="visa",
        card_last4="4242",
        last_error_message="Your card was declined (first try).",
        **fields,
    )
    Payment.objects.filter(pk=payment.pk).update(created_at=timezone.now() - timedelta(days=days_ago))
    return Payment.objects.get(pk=payment.pk)


def test_old_payloads_and_personal_fields_go_and_the_books_stay():
    old_event, new_event, waiting = _received(100), _received(10), _received(100, status="pending")
    old_payment, new_payment = _paid(800), _paid(30)
    open_payment = _paid(900, status=PaymentStatus.REQUIRES_ACTION)

    dry = payment_data_prune(dry_run=True)
    assert (dry.payloads, dry.payments) == (1, 1)
    assert WebhookEvent.objects.get(pk=old_event.pk).payload == old_event.payload  # nothing changed

    report = payment_data_prune()
    assert (report.payloads, report.payments) == (1, 1)
    pruned = WebhookEvent.objects.get(pk=old_event.pk)
    assert pruned.payload == {"pruned": True} and "ada@example.com" not in json.dumps(pruned.payload)
    assert (pruned.stripe_event_id, pruned.type, pruned.status) == (
        old_event.stripe_event_id,
        "customer.updated",
        "processed",
    )
    assert pruned.payload_pruned_at is not None
    assert WebhookEvent.objects.get(pk=new_event.pk).payload == new_event.payload
    assert WebhookEvent.objects.get(pk=waiting.pk).payload == waiting.payload  # never a pending one

    kept = Payment.objects.get(pk=old_payment.pk)
    assert (kept.card_brand, kept.card_last4, kept.last_error_message) == ("", "", "")
    assert (kept.total, kept.currency, kept.status, kept.stripe_payment_intent_id, kept.stripe_charge_id) == (
        old_payment.total,
        old_payment.currency,
        "succeeded",
        "pi_old_800",
        "ch_old_800",
    )
    assert kept.created_at == old_payment.created_at and kept.personal_data_pruned_at is not None
    assert Payment.objects.get(pk=new_payment.pk).card_last4 == "4242"
    assert Payment.objects.get(pk=open_payment.pk).card_last4 == "4242"  # still being paid

    assert (payment_data_prune().payloads, payment_data_prune().payments) == (0, 0)  # once


def test_the_command_dry_run_and_before(settings):
    _received(5)
    _paid(5)
    out = io.StringIO()
    call_command("prune_payment_data", "--dry-run", stdout=out)
    assert "Webhook payloads would be pruned: 0" in out.getvalue()
    tomorrow = (timezone.now() + timedelta(days=1)).isoformat()
    out = io.StringIO()
    call_command("prune_payment_data", "--before", tomorrow, stdout=out)
    assert "Webhook payloads pruned: 1" in out.getvalue()
    assert "card details and error text pruned: 1" in out.getvalue()
    with pytest.raises(CommandError, match="ISO 8601"):
        call_command("prune_payment_data", "--before", "last week")
    settings.PAYMENTS = {
        **settings.PAYMENTS,
        "WEBHOOK_PAYLOAD_RETENTION": None,
        "PERSONAL_DATA_RETENTION": None,
    }
    _received(1000)
    out = io.StringIO()
    call_command("prune_payment_data", stdout=out)
    assert "never (kept: retention is None)" in out.getvalue()
    assert WebhookEvent.objects.filter(payload_pruned_at__isnull=True).count() == 1


def test_a_pruned_event_cannot_be_replayed():
    event = _received(100, status="failed")
    payment_data_prune()
    with pytest.raises(CommandError, match="cannot be replayed: its payload was pruned on"):
        call_command("replay_webhook_events", "--ids", event.stripe_event_id)
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_webhookevent", "change_webhookevent"])
    )
    client = Client()
    client.force_login(staff)
    answer = client.post(
        "/admin/payments/webhookevent/",
        {"action": "replay", "_selected_action": [event.pk]},
        follow=True,
    )
    assert b"cannot be replayed: its payload was pruned" in answer.content
    assert WebhookEvent.objects.get(pk=event.pk).status == "failed"


def test_a_retention_setting_must_be_a_duration(settings):
    from payments.checks import check_payments_settings

    settings.PAYMENTS = {**settings.PAYMENTS, "WEBHOOK_PAYLOAD_RETENTION": 90}
    assert "payments.E009" in [m.id for m in check_payments_settings()]


def test_the_delivery_of_an_event_is_unaffected_by_pruning(client):
    _received(100)
    payment_data_prune()
    event = make_event("customer.updated", stripe_object("customer"))
    payload = json.dumps(event).encode()
    answer = client.post(
        "/api/webhooks/stripe/",
        data=payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign_payload(payload, "whsec_test_primary"),
    )
    assert answer.status_code == 200
