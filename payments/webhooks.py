"""Stripe webhooks: verify and store events, then process them through the payment services.

Receiving stores the event (unique by Stripe's id) and enqueues its processing; the
HTTP answer never waits for the work. Processing locks the event row, runs the
handler for its type inside a savepoint (so a failing handler leaves nothing
half-written), and records the outcome on the row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from payments import services
from payments.conf import payments_settings
from payments.gateway import get_gateway
from payments.gateway.base import EventInfo
from payments.models import WebhookEvent
from payments.queue import enqueue
from payments.states import RefundStatus

logger = logging.getLogger(__name__)

Handler = Callable[[EventInfo], None]


def _intent(event: EventInfo) -> None:
    services.payment_sync_intent(intent=get_gateway().intent_from_object(event.object))


def _checkout(event: EventInfo) -> None:
    services.payment_sync_checkout(
        session=get_gateway().checkout_from_object(event.object),
        failed=event.type == "checkout.session.async_payment_failed",
    )


def _charge(event: EventInfo) -> None:
    gateway = get_gateway()
    charge = gateway.charge_from_object(event.object)
    refunds = []
    # Since API 2022-11-15 a charge no longer lists its refunds: read them, for a charge of ours
    # only, and before any payment row is locked (no lock waits on Stripe).
    lists_no_refunds = event.type == "charge.refunded" and charge.refunds is None and charge.intent_id
    if lists_no_refunds and services.payment_id_for(intent_id=charge.intent_id, charge_id=charge.id):
        refunds = gateway.list_refunds(intent_id=charge.intent_id).items
    services.payment_sync_charge(charge=charge)
    for refund in refunds:
        services.refund_sync(info=refund)


def _refund(event: EventInfo) -> None:
    refund = services.refund_sync(info=get_gateway().refund_from_object(event.object))
    if refund is not None and refund.status == RefundStatus.FAILED:
        logger.error(
            "refund failed at Stripe: staff attention needed",
            extra={
                "refund_id": refund.pk,
                "payment_id": refund.payment_id,
                "stripe_refund": refund.stripe_refund_id,
            },
        )


def _dispute(event: EventInfo) -> None:
    services.dispute_sync(dispute=get_gateway().dispute_from_object(event.object))


HANDLERS: dict[str, Handler] = {
    "payment_intent.succeeded": _intent,
    "payment_intent.payment_failed": _intent,
    "payment_intent.canceled": _intent,
    "payment_intent.requires_action": _intent,
    "payment_intent.processing": _intent,
    "checkout.session.completed": _checkout,
    "checkout.session.async_payment_succeeded": _checkout,
    "checkout.session.async_payment_failed": _checkout,
    "checkout.session.expired": _checkout,
    "charge.succeeded": _charge,
    "charge.refunded": _charge,
    "refund.created": _refund,
    "refund.updated": _refund,
    "refund.failed": _refund,
    "charge.dispute.created": _dispute,
    "charge.dispute.updated": _dispute,
    "charge.dispute.closed": _dispute,
}


# Recorded on an event about another installation's object (and counted by webhook_health).
FOREIGN_OBJECT = "ignored: the object belongs to another installation"


def _object_metadata(payload: dict[str, Any]) -> dict[str, str]:
    obj = (payload.get("data") or {}).get("object") or {}
    return obj.get("metadata") or {} if isinstance(obj, dict) else {}


def webhook_event_store(*, event: EventInfo) -> tuple[WebhookEvent, bool]:
    """Store an event once by its Stripe id; returns (row, created). Safe under concurrency."""
    try:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                # Never hang Stripe's request on a lock: fail fast, answer 503, Stripe retries.
                timeout_ms = int(float(payments_settings.WEBHOOK_LOCK_TIMEOUT) * 1000)
                with connection.cursor() as cursor:
                    cursor.execute(f"SET LOCAL lock_timeout = {timeout_ms}")
            return WebhookEvent.objects.get_or_create(
                stripe_event_id=event.id,
                defaults={
                    "type": event.type[:128],
                    "api_version": event.api_version[:64],
                    "livemode": event.livemode,
                    "payload": event.raw,
                },
            )
    except IntegrityError:
        return WebhookEvent.objects.get(stripe_event_id=event.id), False


def webhook_receive(*, payload: bytes, signature: str) -> tuple[WebhookEvent, bool]:
    """Verify and store an event; returns (row, created). Raises WebhookSignatureError.

    The processing task is enqueued after the row commits; a redelivery of an event
    that is not yet processed enqueues it again (processing is idempotent).
    """
    event = get_gateway().verify_webhook(payload, signature)
    row, created = webhook_event_store(event=event)
    if created or row.status in (WebhookEvent.Status.PENDING, WebhookEvent.Status.FAILED):
        enqueue("payments.tasks.process_webhook_event", row.pk)
    logger.info(
        "webhook received",
        extra={"stripe_event": event.id, "event_type": event.type, "duplicate": not created},
    )
    return row, created


def webhook_event_process(*, event_id: int, force: bool = False) -> WebhookEvent:
    """Process one stored event once (again with `force`); failures are recorded, not raised."""
    with transaction.atomic():
        row = WebhookEvent.objects.select_for_update().get(pk=event_id)
        if row.status in (WebhookEvent.Status.PROCESSED, WebhookEvent.Status.IGNORED) and not force:
            return row
        row.attempts += 1
        handler = HANDLERS.get(row.type)
        if handler is None:
            row.status = WebhookEvent.Status.IGNORED
        elif services.is_foreign(_object_metadata(row.payload)):
            # Another installation on the same Stripe account made this object: never ours to apply.
            row.status = WebhookEvent.Status.IGNORED
            row.last_error = FOREIGN_OBJECT
            logger.info(
                "webhook event of another installation ignored",
                extra={"stripe_event": row.stripe_event_id, "event_type": row.type},
            )
        else:
            try:
                with transaction.atomic():
                    handler(get_gateway().event_from_payload(row.payload))
            except Exception as exc:
                row.status = WebhookEvent.Status.FAILED
                row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
                logger.exception(
                    "webhook event failed",
                    extra={
                        "stripe_event": row.stripe_event_id,
                        "event_type": row.type,
                        "attempts": row.attempts,
                    },
                )
            else:
                row.status = WebhookEvent.Status.PROCESSED
                row.last_error = ""
        row.processed_at = timezone.now()
        row.save()
    return row


def webhook_events_replay(*, events: Iterable[WebhookEvent]) -> list[WebhookEvent]:
    """Run stored events through processing again, in the order Stripe created them."""
    ordered = sorted(events, key=lambda e: (e.payload.get("created") or 0, e.pk))
    return [webhook_event_process(event_id=e.pk, force=True) for e in ordered]


def webhook_health(*, stale_after: timedelta = timedelta(minutes=10)) -> dict[str, Any]:
    """What a load balancer or operator needs: last events, backlog and failures."""
    now = timezone.now()
    stats = WebhookEvent.objects.aggregate(
        last_received=Max("received_at"),
        last_processed=Max("processed_at"),
        pending=Count("pk", filter=Q(status=WebhookEvent.Status.PENDING)),
        failed=Count("pk", filter=Q(status=WebhookEvent.Status.FAILED)),
        stale=Count("pk", filter=Q(status=WebhookEvent.Status.PENDING, received_at__lt=now - stale_after)),
        gave_up=Count(
            "pk",
            filter=Q(status=WebhookEvent.Status.FAILED, attempts__gte=payments_settings.WEBHOOK_MAX_ATTEMPTS),
        ),
        foreign=Count("pk", filter=Q(status=WebhookEvent.Status.IGNORED, last_error=FOREIGN_OBJECT)),
    )
    healthy = stats["stale"] == 0 and stats["gave_up"] == 0
    return {
        "healthy": healthy,
        "last_received_at": stats["last_received"],
        "last_processed_at": stats["last_processed"],
        "pending": stats["pending"],
        "failed": stats["failed"],
        "stale_pending": stats["stale"],
        "failed_permanently": stats["gave_up"],
        "other_installation": stats["foreign"],
    }
