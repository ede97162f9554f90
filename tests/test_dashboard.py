"""The staff dashboard in the admin: figures from seeded data, a fixed number of queries, the
stuck items linking to their lists, and staff who may view payments only."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from payments.dashboard import figures
from payments.models import Payment, Refund, WebhookEvent
from payments.states import PaymentStatus
from tests.factories import PaymentFactory, UserFactory

pytestmark = pytest.mark.django_db


def seed(days: int = 30) -> None:
    """A month of payments: most paid, some declined, a refund, events and what is stuck."""
    now = timezone.now()
    for day in range(days):
        for n in range(3):
            status = PaymentStatus.FAILED if (day + n) % 5 == 0 else PaymentStatus.SUCCEEDED
            payment = PaymentFactory(
                status=status,
                total=2060 + 100 * n,
                subtotal=2000 + 100 * n,
                fee=60,
                last_error_decline_code="insufficient_funds" if status == "failed" and n % 2 else "",
                last_error_code="card_declined" if status == "failed" else "",
            )
            Payment.objects.filter(pk=payment.pk).update(created_at=now - timedelta(days=day, hours=n))
    paid = Payment.objects.filter(status="succeeded").first()
    Refund.objects.create(
        payment=paid, amount=500, currency="usd", status="succeeded", idempotency_key=f"seed-refund-{days}"
    )
    for i, status in enumerate(["processed", "processed", "failed", "pending"]):
        event = WebhookEvent.objects.create(
            stripe_event_id=f"evt_seed_{days}_{i}",
            type="payment_intent.succeeded",
            payload={},
            status=status,
            processed_at=now if status == "processed" else None,
        )
        WebhookEvent.objects.filter(pk=event.pk).update(received_at=now - timedelta(minutes=10 + i))
    stale = PaymentFactory(status=PaymentStatus.REQUIRES_ACTION)
    Payment.objects.filter(pk=stale.pk).update(updated_at=now - timedelta(days=1))


def _staff_client() -> Client:
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_payment"))
    client = Client()
    client.force_login(staff)
    return client


def test_the_figures_add_up():
    seed()
    data = figures()
    month = data["totals"][2]
    paid = Payment.objects.filter(status="succeeded").count()
    failed = Payment.objects.filter(status="failed").count()
    assert month["payments"] == paid
    assert month["success_rate"] == round(100 * paid / (paid + failed), 1)
    assert data["declines"][0] == {"reason": "card_declined", "count": failed - data["declines"][1]["count"]}
    assert {d["reason"] for d in data["declines"]} == {"card_declined", "insufficient_funds"}
    assert data["stuck"] == {
        "events_pending": 1,
        "events_failed": 1,
        "refunds_pending": 0,
        "payments_open": 1,
    }
    revenue = sum(data["series"][1].values)
    assert revenue == sum(p.total for p in Payment.objects.filter(status="succeeded"))


def test_the_page_renders_in_a_fixed_number_of_queries(django_assert_max_num_queries):
    seed(days=5)
    client = _staff_client()
    with django_assert_max_num_queries(14):
        page = client.get("/admin/payments/payment/dashboard/")
    assert page.status_code == 200
    body = page.content.decode()
    assert body.count('<svg class="dashboard-chart"') == 4
    assert "/admin/payments/webhookevent/?status__exact=failed" in body
    assert "1 payment open too long" in body
    seed(days=30)  # six times the rows (and more stuck), the same queries
    with django_assert_max_num_queries(14):
        assert client.get("/admin/payments/payment/dashboard/").status_code == 200
    assert b"Dashboard" in client.get("/admin/payments/payment/").content


def test_only_staff_who_may_view_payments():
    staff = UserFactory(is_staff=True)
    client = Client()
    client.force_login(staff)
    assert client.get("/admin/payments/payment/dashboard/").status_code == 403
    assert Client().get("/admin/payments/payment/dashboard/").status_code == 302  # to the login
