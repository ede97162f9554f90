"""Celery tasks of the payments app: each takes ids, loads rows and calls one service."""

from __future__ import annotations

import logging

from celery import shared_task

from payments.conf import payments_settings
from payments.models import WebhookEvent
from payments.queue import backoff

logger = logging.getLogger(__name__)


@shared_task(bind=True, acks_late=True, max_retries=None)
def process_webhook_event(self, event_id: int) -> str:
    """Process a stored webhook event; a failure is retried with backoff up to WEBHOOK_MAX_ATTEMPTS."""
    from payments.webhooks import webhook_event_process

    row = webhook_event_process(event_id=event_id)
    if row.status == WebhookEvent.Status.FAILED and row.attempts < payments_settings.WEBHOOK_MAX_ATTEMPTS:
        raise self.retry(countdown=backoff(row.attempts))
    return row.status
