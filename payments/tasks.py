"""Celery tasks of the payments app: each takes ids, loads rows and calls one service."""

from __future__ import annotations

import contextlib
import logging

from celery import Task, shared_task
from celery.signals import task_postrun, task_prerun, task_retry
from django.utils import timezone

from payments import metrics, services, timeline
from payments.conf import payments_settings
from payments.exceptions import ProviderError
from payments.models import Refund, WebhookEvent
from payments.queue import backoff, enqueue
from payments.reconcile import payments_reconcile
from payments.retention import payment_data_prune
from payments.states import RefundStatus
from payments.webhooks import webhook_event_process, webhook_events_drain

logger = logging.getLogger(__name__)


@shared_task(bind=True, acks_late=True, max_retries=None)
def process_webhook_event(self: Task, event_id: int) -> str:
    """Process a stored webhook event; a failure is retried with backoff up to WEBHOOK_MAX_ATTEMPTS."""
    if not WebhookEvent.objects.filter(pk=event_id).exists():
        return "missing"
    row = webhook_event_process(event_id=event_id)
    if row.status == WebhookEvent.Status.FAILED and row.attempts < payments_settings.WEBHOOK_MAX_ATTEMPTS:
        raise self.retry(countdown=backoff(row.attempts))
    return row.status


# A drain hands over to a new task after this long, well inside any task time limit.
DRAIN_SECONDS = 20.0


@shared_task(acks_late=True)
def process_pending_webhook_events() -> int:
    """Process the pending events (nudged by the webhook endpoint); a failed one is retried on its own."""
    done, more = webhook_events_drain(seconds=DRAIN_SECONDS)
    for row in done:
        if row.status == WebhookEvent.Status.FAILED and row.attempts < payments_settings.WEBHOOK_MAX_ATTEMPTS:
            enqueue(process_webhook_event, row.pk, countdown=backoff(row.attempts))
    if more:
        enqueue(process_pending_webhook_events)
    return len(done)


@shared_task(bind=True, acks_late=True, max_retries=None)
def retry_refund(self: Task, refund_id: int) -> str:
    """Submit a refund that could not reach Stripe, with its own key, until it lands or we give up."""
    refund = Refund.objects.filter(pk=refund_id).first()
    if refund is None:
        return "missing"
    try:
        refund = services.refund_submit(refund=refund)
    except ProviderError as error:
        attempt = self.request.retries + 1
        if error.retryable and attempt < payments_settings.REFUND_RETRY_ATTEMPTS:
            raise self.retry(countdown=backoff(attempt)) from None
        services.refund_give_up(refund_id=refund_id, reason=error.message)
        return "failed"
    return refund.status


@shared_task(acks_late=True)
def expire_stale_payments() -> dict:
    """Cancel open payment attempts nobody finished (scheduled by beat)."""
    return services.payments_expire_stale(older_than=payments_settings.OPEN_PAYMENT_TTL)


@shared_task(acks_late=True)
def sweep_webhook_events() -> dict:
    """Re-enqueue events whose processing never started; report failed ones (scheduled by beat)."""
    stale = WebhookEvent.objects.filter(
        status=WebhookEvent.Status.PENDING,
        received_at__lt=timezone.now() - payments_settings.WEBHOOK_SWEEP_AFTER,
    ).values_list("pk", flat=True)[:1000]
    for event_id in stale:
        enqueue(process_webhook_event, event_id)
    failed = WebhookEvent.objects.filter(
        status=WebhookEvent.Status.FAILED, attempts__gte=payments_settings.WEBHOOK_MAX_ATTEMPTS
    ).count()
    if failed:
        logger.error("webhook events failed for good: replay them", extra={"failed": failed})
    return {"requeued": len(stale), "failed": failed}


@shared_task(acks_late=True)
def sweep_pending_refunds() -> int:
    """Submit again the refunds Stripe has not heard of after REFUND_SWEEP_AFTER (their task was lost
    with a broker outage or a killed worker); scheduled by beat every minute."""
    stale = Refund.objects.filter(
        status=RefundStatus.PENDING,
        stripe_refund_id="",
        updated_at__lt=timezone.now() - payments_settings.REFUND_SWEEP_AFTER,
    ).values_list("pk", flat=True)[:500]
    for refund_id in stale:
        enqueue(retry_refund, refund_id)
    return len(stale)


@shared_task(acks_late=True)
def reconcile_payments() -> dict:
    """Compare with Stripe since the last run and fix what moved forward (scheduled by beat)."""
    report = payments_reconcile()
    if report.unresolved:
        logger.error("reconciliation found discrepancies", extra={"unresolved": len(report.unresolved)})
    return {"fixed": len(report.fixed), "unresolved": len(report.unresolved)}


@shared_task(acks_late=True)
def prune_payment_data() -> dict:
    """Remove what the retention settings say is too old (scheduled by beat once a day)."""
    report = payment_data_prune()
    return {"payloads": report.payloads, "payments": report.payments}


@task_retry.connect(weak=False, dispatch_uid="payments.count_task_retries")
def _count_retry(sender: Task | None = None, **kwargs: object) -> None:
    metrics.TASK_RETRIES.labels(task=metrics.label(getattr(sender, "name", ""))).inc()


_task_causes: dict[str, object] = {}


@task_prerun.connect(weak=False, dispatch_uid="payments.task_cause")
def _cause_of_task(task_id: str = "", task: Task | None = None, **kwargs: object) -> None:
    """What a task changes is recorded on payment timelines as caused by it."""
    _task_causes[task_id] = timeline.set_cause(f"task {getattr(task, 'name', '')}")


@task_postrun.connect(weak=False, dispatch_uid="payments.task_cause_end")
def _end_cause_of_task(task_id: str = "", **kwargs: object) -> None:
    token = _task_causes.pop(task_id, None)
    if token is not None:
        # Set in another context (a thread pool): nothing to reset here.
        with contextlib.suppress(ValueError):
            timeline.reset_cause(token)  # type: ignore[arg-type]
