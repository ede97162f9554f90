"""Two installations on one Stripe account (staging and production, two developers, a reset
database): the same booking ids, one emulator, no key collision, nothing of the other applied."""

import json
import os
import subprocess
import sys

import psycopg2
import pytest
from django.conf import settings as django_settings
from django.db import connection

from bookings.services import booking_pay
from payments.models import Installation, Payment, WebhookEvent
from payments.reconcile import payments_reconcile
from payments.states import PaymentStatus
from payments.webhooks import FOREIGN_OBJECT, webhook_event_process
from tests.factories import BookingFactory

pytestmark = [pytest.mark.django_db, pytest.mark.emulator, pytest.mark.slow]


@pytest.fixture
def second_database():
    """An empty database of the second installation's own, dropped afterwards."""
    params = connection.get_connection_params()
    name = f"{connection.settings_dict['NAME']}_second_{os.getpid()}"
    admin = psycopg2.connect(
        dbname="postgres", host=params.get("host"), port=params.get("port"), user=params.get("user")
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}"')
    yield f"postgres://{params.get('user')}@{params.get('host')}:{params.get('port') or 5432}/{name}"
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def _second_installation_pays(database_url, stripe, booking, card):
    ids = (booking.pk, booking.user_id, booking.event_id)
    env = {
        **os.environ,
        # Its tasks stay in its own process: nothing lands in the suite's Redis.
        "TEST_CELERY_BROKER_URL": "memory://",
        "DATABASE_URL": database_url,
        "STRIPE_API_BASE": stripe.url,
        "DJANGO_SETTINGS_MODULE": "config.test_settings",
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.second_installation", *map(str, ids), card],
        env=env,
        cwd=django_settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_installations_same_booking_ids_no_collision(stripe_env, second_database, deliver):
    booking = BookingFactory()
    ours = booking_pay(booking_id=booking.pk, payment_method_id=stripe_env.card(), confirm=True).payment
    theirs = _second_installation_pays(second_database, stripe_env, booking, stripe_env.card())
    # Same booking id, two installations: two intents, both paid, no idempotency error.
    assert theirs["booking_id"] == booking.pk and theirs["status"] == "succeeded"
    assert theirs["installation"] != Installation.current_id()
    assert theirs["intent_id"] != ours.stripe_payment_intent_id
    assert theirs["idempotency_key"] != ours.idempotency_key
    assert not [c for c in stripe_env.calls("POST") if c.replayed]
    # Their intent's events reach our webhook (one Stripe account, one endpoint): ignored, counted.
    events = stripe_env.api("GET", "/v1/events", limit="100")["data"]
    theirs_events = [e for e in events if e["data"]["object"].get("id") == theirs["intent_id"]]
    assert theirs_events
    for event in theirs_events:
        assert deliver(event).status_code == 200
        row = WebhookEvent.objects.get(stripe_event_id=event["id"])
        row = webhook_event_process(event_id=row.pk)
        assert (row.status, row.last_error) == ("ignored", FOREIGN_OBJECT)
    assert Payment.objects.count() == 1
    assert Payment.objects.get().stripe_payment_intent_id == ours.stripe_payment_intent_id
    # Reconciliation skips their objects too, and finds ours in order.
    report = payments_reconcile(everything=True)
    assert report.other_installation >= 1
    assert all(f.stripe_id != theirs["intent_id"] for f in report.findings)
    assert Payment.objects.get(pk=ours.pk).status == PaymentStatus.SUCCEEDED
