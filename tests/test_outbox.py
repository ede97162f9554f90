"""What must happen later is a row written with the change that makes it necessary; sweeps deliver
what a lost enqueue (Redis down, a killed worker) would otherwise drop."""

from datetime import timedelta

import pytest
from django.utils import timezone

from bookings.emails import emails_sweep
from bookings.models import EmailLog
from bookings.services import booking_confirm
from bookings.tasks import send_booking_email
from payments import services
from payments.models import Refund
from payments.tasks import retry_refund, sweep_pending_refunds
from tests.factories import BookingFactory

pytestmark = [pytest.mark.django_db]


def test_a_confirmation_records_its_emails_in_the_same_transaction(
    mailoutbox, django_capture_on_commit_callbacks
):
    booking = BookingFactory()
    with django_capture_on_commit_callbacks(execute=False):  # the enqueue is lost
        booking_confirm(booking_id=booking.pk)
    logs = EmailLog.objects.filter(booking=booking)
    assert sorted(logs.values_list("kind", "status")) == [
        ("confirmed", "pending"),
        ("host_confirmed", "pending"),
    ]
    EmailLog.objects.update(updated_at=timezone.now() - timedelta(minutes=10))
    with django_capture_on_commit_callbacks(execute=False) as queued:
        assert emails_sweep(older_than=timedelta(minutes=6)) == 2
    assert len(queued) == 2
    for kind in ("confirmed", "host_confirmed"):
        send_booking_email.apply(args=(booking.pk, kind))  # as the worker runs what the sweep queued
        send_booking_email.apply(args=(booking.pk, kind))  # and a duplicate sends nothing
    assert len(mailoutbox) == 2
    assert emails_sweep(older_than=timedelta(0)) == 0


@pytest.mark.emulator
def test_a_refund_whose_task_was_lost_is_swept_to_stripe(stripe_env, django_capture_on_commit_callbacks):
    from bookings.services import booking_pay

    payment = booking_pay(
        booking_id=BookingFactory().pk, payment_method_id=stripe_env.card(), confirm=True
    ).payment
    stripe_env.fail("POST", "/v1/refunds", status=503, times=4)  # Stripe down: the refund waits
    with django_capture_on_commit_callbacks(execute=False):  # and its retry task is lost
        refund = services.refund_create(payment=payment, amount=500)
    assert refund.status == "pending" and not refund.stripe_refund_id
    Refund.objects.filter(pk=refund.pk).update(updated_at=timezone.now() - timedelta(minutes=10))
    with django_capture_on_commit_callbacks(execute=False) as queued:
        assert sweep_pending_refunds.apply().get() == 1
    assert len(queued) == 1
    retry_refund.apply(args=(refund.pk,))
    refund.refresh_from_db()
    assert refund.status == "succeeded" and refund.stripe_refund_id
    assert sweep_pending_refunds.apply().get() == 0


def test_a_killed_worker_delays_work_by_minutes(settings):
    assert settings.CELERY_BROKER_VISIBILITY_TIMEOUT <= 600
    assert settings.CELERY_TASK_TIME_LIMIT < settings.CELERY_BROKER_VISIBILITY_TIMEOUT
    assert settings.PAYMENTS["MAX_RETRY_COUNTDOWN"] < settings.CELERY_BROKER_VISIBILITY_TIMEOUT
    beat = {entry["task"]: entry["schedule"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    for sweep in (
        "payments.tasks.sweep_webhook_events",
        "payments.tasks.sweep_pending_refunds",
        "bookings.tasks.sweep_pending_emails",
    ):
        assert beat[sweep] <= 60
