"""Retention: what is kept of old payments and webhook events, and for how long.

Raw webhook payloads (Stripe's objects, with names, emails and addresses) are replaced by a stub
after WEBHOOK_PAYLOAD_RETENTION; a finished payment's card brand, last four digits and error
text are cleared after PERSONAL_DATA_RETENTION. What accounting and reconciliation need stays:
every id (ours and Stripe's), amount, currency, status and time, the event's type and outcome.
A pruned event can no longer be replayed; reconciliation reads the current state from Stripe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.db.models import JSONField, Value
from django.utils import timezone

from payments.conf import payments_settings
from payments.models import Payment, WebhookEvent
from payments.states import OPEN_STATUSES

logger = logging.getLogger(__name__)

# What a pruned event's payload becomes: its id and type stay in their own columns.
PRUNED_PAYLOAD = {"pruned": True}
BATCH = 1000


@dataclass(frozen=True)
class PruneReport:
    payloads_before: datetime | None
    personal_before: datetime | None
    payloads: int
    payments: int
    dry_run: bool


def _cutoffs(before: datetime | None) -> tuple[datetime | None, datetime | None]:
    if before is not None:
        return before, before
    now = timezone.now()
    payloads = payments_settings.WEBHOOK_PAYLOAD_RETENTION
    personal = payments_settings.PERSONAL_DATA_RETENTION
    return (now - payloads if payloads else None), (now - personal if personal else None)


def _in_batches(queryset, **changes) -> int:  # type: ignore[no-untyped-def]
    """Update the rows of `queryset` a batch at a time (short transactions, no long locks)."""
    done = 0
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:BATCH])
        if not ids:
            return done
        done += queryset.model.objects.filter(pk__in=ids).update(**changes)


def payment_data_prune(*, before: datetime | None = None, dry_run: bool = False) -> PruneReport:
    """Prune what the retention settings (or `before`, for both) say is too old; see the module."""
    payloads_before, personal_before = _cutoffs(before)
    events = WebhookEvent.objects.none()
    if payloads_before is not None:
        # Never an event still waiting to be processed.
        events = WebhookEvent.objects.filter(
            received_at__lt=payloads_before, payload_pruned_at__isnull=True
        ).exclude(status=WebhookEvent.Status.PENDING)
    payments = Payment.objects.none()
    if personal_before is not None:
        payments = Payment.objects.filter(
            created_at__lt=personal_before, personal_data_pruned_at__isnull=True
        ).exclude(status__in=OPEN_STATUSES)
    if dry_run:
        return PruneReport(payloads_before, personal_before, events.count(), payments.count(), True)
    now = timezone.now()
    pruned_events = _in_batches(
        events, payload=Value(PRUNED_PAYLOAD, output_field=JSONField()), payload_pruned_at=now
    )
    pruned_payments = _in_batches(
        payments, card_brand="", card_last4="", last_error_message="", personal_data_pruned_at=now
    )
    logger.info("payment data pruned", extra={"payloads": pruned_events, "payments": pruned_payments})
    return PruneReport(payloads_before, personal_before, pruned_events, pruned_payments, False)
