"""/metrics: Prometheus' text format, for staff or the metrics token, with counters that move by
exactly what happened."""

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from tests.factories import BookingFactory, UserFactory

pytestmark = [pytest.mark.django_db]


def _samples(client) -> dict:
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.content
    assert answer["Content-Type"].startswith("text/plain; version=")
    values: dict = {}
    for family in text_string_to_metric_families(answer.content.decode()):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def _delta(before: dict, after: dict, name: str, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_only_staff_or_the_token_read_the_metrics(settings):
    assert Client().get("/metrics").status_code == 401
    client = Client()
    client.force_login(UserFactory())
    assert client.get("/metrics").status_code == 401
    settings.METRICS_TOKEN = "scrape-me-0123456789"
    assert Client(HTTP_AUTHORIZATION="Bearer wrong").get("/metrics").status_code == 401
    assert Client(HTTP_AUTHORIZATION="Bearer scrape-me-0123456789").get("/metrics").status_code == 200
    staff = Client()
    staff.force_login(UserFactory(is_staff=True))
    assert staff.get("/metrics").status_code == 200


@pytest.mark.emulator
def test_a_pay_and_refund_flow_moves_the_counters_by_exactly_that(
    stripe_env, django_capture_on_commit_callbacks
):
    staff = Client()
    staff.force_login(UserFactory(is_staff=True))
    before = _samples(staff)
    booking = BookingFactory()
    api = APIClient()
    api.force_authenticate(booking.user)
    base = f"/api/bookings/{booking.pk}/payment"
    with django_capture_on_commit_callbacks(execute=True):
        paid = api.post(
            f"{base}/intent/",
            {"payment_method_id": stripe_env.card(), "confirm_immediately": True},
            format="json",
        )
        assert paid.json()["payment"]["status"] == "succeeded"
        refunded = api.post(f"{base}/refund/", {"amount": "5.00"}, format="json")
        assert refunded.status_code == 201, refunded.content
    after = _samples(staff)
    assert _delta(before, after, "payments_started_total") == 1
    assert _delta(before, after, "payments_succeeded_total") == 1
    assert _delta(before, after, "payments_refunds_total", outcome="succeeded") == 1
    ok = {"outcome": "ok"}
    assert (
        _delta(before, after, "payments_stripe_requests_total", operation="payment_intent.create", **ok) == 1
    )
    assert (
        _delta(before, after, "payments_stripe_requests_total", operation="payment_intent.confirm", **ok) == 1
    )
    assert _delta(before, after, "payments_stripe_requests_total", operation="refund.create", **ok) == 1
    # The histogram: one observation for the create, in its buckets.
    count = _delta(
        before, after, "payments_stripe_request_duration_seconds_count", operation="payment_intent.create"
    )
    assert count == 1
    top = _delta(
        before,
        after,
        "payments_stripe_request_duration_seconds_bucket",
        operation="payment_intent.create",
        le="+Inf",
    )
    assert top == 1


@pytest.mark.emulator
def test_a_decline_is_counted_by_its_code(stripe_env, django_capture_on_commit_callbacks):
    staff = Client()
    staff.force_login(UserFactory(is_staff=True))
    before = _samples(staff)
    booking = BookingFactory()
    api = APIClient()
    api.force_authenticate(booking.user)
    with django_capture_on_commit_callbacks(execute=True):
        declined = api.post(
            f"/api/bookings/{booking.pk}/payment/intent/",
            {"payment_method_id": stripe_env.card("4000000000009995"), "confirm_immediately": True},
            format="json",
        )
    assert declined.status_code == 402
    after = _samples(staff)
    assert _delta(before, after, "payments_failed_total", reason="insufficient_funds") == 1
    assert _delta(before, after, "payments_succeeded_total") == 0


def test_webhook_deliveries_and_their_processing_are_counted(deliver, django_capture_on_commit_callbacks):
    from payments.models import WebhookEvent
    from payments.webhooks import webhook_event_process
    from stripe_emulator.harness import make_event, stripe_object

    staff = Client()
    staff.force_login(UserFactory(is_staff=True))
    before = _samples(staff)
    event = make_event("customer.updated", stripe_object("customer"))
    assert deliver(event).status_code == 200
    assert deliver(event).status_code == 200  # Stripe delivers it again
    with django_capture_on_commit_callbacks(execute=True):
        webhook_event_process(event_id=WebhookEvent.objects.get().pk)
    after = _samples(staff)
    labels = {"type": "customer.updated"}
    assert _delta(before, after, "payments_webhook_events_total", outcome="received", **labels) == 1
    assert _delta(before, after, "payments_webhook_events_total", outcome="duplicate", **labels) == 1
    assert _delta(before, after, "payments_webhook_events_total", outcome="ignored", **labels) == 1
    assert _delta(before, after, "payments_webhook_ack_duration_seconds_count") == 2
    assert _delta(before, after, "payments_webhook_lag_seconds_count") == 1


def test_labels_never_carry_an_id_or_an_address():
    from payments.metrics import label

    assert label("insufficient_funds") == "insufficient_funds"
    assert label("payment_intent.succeeded") == "payment_intent.succeeded"
    assert label("ada@example.com") == "other"
    assert label("pi_3MtwBwLkdIwHu7ix28a3tqPa Ada") == "other"
    assert label("pi_3MtwBwLkdIwHu7ix28a3tqPa") == "other"
    assert label("") == "none"


def test_several_processes_add_up(tmp_path):
    """Under gunicorn or Celery each process writes its samples to PROMETHEUS_MULTIPROC_DIR and
    /metrics adds them up: two processes count, a third serves the sum."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "config.test_settings",
        "METRICS_TOKEN": "scrape-me-0123456789",
    }
    count = "import django; django.setup(); from payments import metrics; metrics.PAYMENTS_STARTED.inc({n})"
    for n in (2, 3):
        subprocess.run([sys.executable, "-c", count.format(n=n)], env=env, check=True, timeout=120)
    serve = (
        "import django; django.setup(); from django.test import Client; "
        "print(Client(HTTP_AUTHORIZATION='Bearer scrape-me-0123456789', HTTP_HOST='localhost')"
        ".get('/metrics').content.decode())"
    )
    served = subprocess.run(
        [sys.executable, "-c", serve], env=env, check=True, timeout=120, capture_output=True, text=True
    ).stdout
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(served)
        for sample in family.samples
    }
    assert values["payments_started_total"] == 5
