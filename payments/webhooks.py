"""Stripe webhooks: verify and store events, then process them through the payment services.

Receiving stores the event (unique by Stripe's id) and enqueues its processing; the
HTTP answer never waits for the work. Processing locks the event row, runs the
handler for its type inside a savepoint (so a failing handler leaves nothing
half-written), and records the outcome on the row.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, NamedTuple

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Count, F, Max, Q
from django.utils import timezone

from payments import metrics, services, timeline
from payments.conf import payments_settings
from payments.exceptions import EventPruned
from payments.gateway import get_gateway
from payments.gateway.base import ChargeStatus, EventInfo, IntentInfo
from payments.models import WebhookEvent
from payments.queue import enqueue, nudge
from payments.rows import update_rows
from payments.states import PaymentStatus, RefundStatus

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


class StoredEvent(NamedTuple):
    """What storing an event tells the caller: its row, its status, and whether this call made it."""

    pk: int
    status: str
    created: bool


def webhook_event_store(*, event: EventInfo, body: bytes | None = None) -> StoredEvent:
    """Store an event once by its Stripe id (`body`: its JSON as received, if at hand).

    Safe under concurrency; never waits longer than WEBHOOK_LOCK_TIMEOUT for a lock (the caller
    answers 503 and Stripe delivers again).
    """
    if _one_round_trip_possible():
        return _store_in_one_round_trip(event, body)
    try:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                # Never hang Stripe's request on a lock: fail fast, answer 503, Stripe retries.
                with connection.cursor() as cursor:
                    cursor.execute(f"SET LOCAL lock_timeout = {_lock_timeout_ms()}")
            row, created = WebhookEvent.objects.get_or_create(
                stripe_event_id=event.id,
                defaults={
                    "type": event.type[:128],
                    "api_version": event.api_version[:64],
                    "livemode": event.livemode,
                    "payload": event.raw,
                },
            )
    except IntegrityError:
        row, created = WebhookEvent.objects.get(stripe_event_id=event.id), False
    return StoredEvent(row.pk, row.status, created)


_INSERTED_FIELDS = ("stripe_event_id", "type", "api_version", "livemode", "payload", "status", "received_at")


def _insert_event_sql(timeout_ms: int) -> str:
    # These fields keep their names as columns (no db_column): the model is the one source.
    table, pk = WebhookEvent._meta.db_table, WebhookEvent._meta.pk.column
    names = ", ".join((*_INSERTED_FIELDS, "attempts", "last_error"))
    # Sent as one simple query: PostgreSQL runs both statements as one implicit transaction, so
    # SET LOCAL bounds this INSERT's lock waits and ends with it (one round trip, no BEGIN/COMMIT).
    return (
        f"SET LOCAL lock_timeout = {int(timeout_ms)}; "  # noqa: S608 - names from the model, values as parameters
        f"INSERT INTO {table} ({names}) VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s, 0, '') "
        f"ON CONFLICT (stripe_event_id) DO NOTHING RETURNING {pk}"
    )


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _lock_timeout_ms() -> int:
    return int(_seconds(payments_settings.WEBHOOK_LOCK_TIMEOUT) * 1000)


def _one_round_trip_possible() -> bool:
    """Two statements in one query need PostgreSQL, autocommit (SET LOCAL must end with the
    INSERT) and client-side parameters (psycopg2, or psycopg 3 without server_side_binding: a
    prepared statement holds one command)."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return False
    return not connection.settings_dict.get("OPTIONS", {}).get("server_side_binding")


def _store_in_one_round_trip(event: EventInfo, body: bytes | None) -> StoredEvent:
    timeout_ms = _lock_timeout_ms()
    payload = body.decode() if body is not None else json.dumps(event.raw)
    with connection.cursor() as cursor:
        cursor.execute(
            _insert_event_sql(timeout_ms),
            [
                event.id,
                event.type[:128],
                event.api_version[:64],
                event.livemode,
                payload,
                WebhookEvent.Status.PENDING,
                timezone.now(),
            ],
        )
        # psycopg2 shows the last statement's result; psycopg 3 the first (the SET's, no rows).
        while cursor.description is None and cursor.nextset():
            pass
        inserted = cursor.fetchone()
    if inserted is not None:
        return StoredEvent(inserted[0], WebhookEvent.Status.PENDING, True)
    row = WebhookEvent.objects.values_list("pk", "status").get(stripe_event_id=event.id)
    return StoredEvent(row[0], row[1], False)


def webhook_receive(*, payload: bytes, signature: str) -> StoredEvent:
    """Verify and store an event; raises WebhookSignatureError.

    The stored row is the queue: after it commits, the drain task is nudged (at most once per
    WEBHOOK_NUDGE_INTERVAL per process, see queue.nudge), so an acknowledgement costs no broker
    round trip of its own. A redelivery of an event that failed sends it to processing again.
    """
    event = get_gateway().verify_webhook(payload, signature)
    stored = webhook_event_store(event=event, body=payload)
    if stored.status == WebhookEvent.Status.FAILED:
        enqueue("payments.tasks.process_webhook_event", stored.pk)
    elif stored.status == WebhookEvent.Status.PENDING:
        nudge(
            "payments.tasks.process_pending_webhook_events", interval=payments_settings.WEBHOOK_NUDGE_INTERVAL
        )
    logger.info(
        "webhook received",
        extra={"stripe_event": event.id, "event_type": event.type, "duplicate": not stored.created},
    )
    outcome = "received" if stored.created else "duplicate"
    metrics.WEBHOOK_EVENTS.labels(type=metrics.label(event.type), outcome=outcome).inc()
    return stored


def webhook_event_process(*, event_id: int, force: bool = False) -> WebhookEvent:
    """Process one stored event once (again with `force`); failures are recorded, not raised."""
    with transaction.atomic():
        row = WebhookEvent.objects.select_for_update().get(pk=event_id)
        if row.status in (WebhookEvent.Status.PROCESSED, WebhookEvent.Status.IGNORED) and not force:
            return row
        if row.payload_pruned_at is not None:
            if force:
                raise _pruned(row)
            return row  # nothing left to process (a retry that outlived the retention)
        _process_locked(row)
    return row


def _pruned(row: WebhookEvent) -> EventPruned:
    return EventPruned(
        f"Event {row.stripe_event_id} ({row.type}) cannot be replayed: its payload was pruned on "
        f"{row.payload_pruned_at:%Y-%m-%d} (WEBHOOK_PAYLOAD_RETENTION). reconcile_payments reads the "
        "current state of its objects from Stripe."
    )


# Events claimed and applied per transaction by a drain.
DRAIN_BATCH = 100


def webhook_events_drain(
    *, seconds: float | None = None, batch_size: int = DRAIN_BATCH
) -> tuple[list[WebhookEvent], bool]:
    """Process pending events, oldest first, until none is left or `seconds` have passed.

    Returns the events processed and whether it stopped for time (events may be left). Events are
    claimed with SKIP LOCKED, `batch_size` per transaction, so drains running side by side share
    the backlog and never process an event twice. The run of successes (payment_intent.succeeded,
    a paid charge.succeeded) and of events nothing is done with that a claim starts with is applied
    together (services.payments_sync_succeeded; successes that are not plain one by one, in
    savepoints), any other event alone, in the order they were stored (_process_batch). The
    signals follow the commit, the successes as one payments_succeeded. A batch that cannot be
    recorded is processed again one event per transaction, so the event at fault is failed on
    its own.
    """
    done: list[WebhookEvent] = []
    deadline = None if seconds is None else time.monotonic() + seconds
    while deadline is None or time.monotonic() < deadline:
        claimed: list[WebhookEvent] = []
        try:
            with services.successes_batched(), transaction.atomic():
                claimed = list(
                    WebhookEvent.objects.select_for_update(skip_locked=True)
                    .filter(status=WebhookEvent.Status.PENDING)
                    .order_by("pk")[:batch_size]
                )
                if not claimed:
                    return done, False
                processed = _process_batch(claimed)
        except DatabaseError:
            if not claimed:
                raise  # the claim itself failed: the database is the problem, not an event
            logger.warning("webhook batch not recorded: one event at a time", extra={"events": len(claimed)})
            done.extend(row for row in map(_drain_one, (row.pk for row in claimed)) if row is not None)
            continue
        done.extend(processed)
    return done, True


def _drain_one(event_id: int) -> WebhookEvent | None:
    """Process one pending event in its own transaction (None if it is no longer pending)."""
    try:
        with transaction.atomic():
            row = (
                WebhookEvent.objects.select_for_update(skip_locked=True)
                .filter(pk=event_id, status=WebhookEvent.Status.PENDING)
                .first()
            )
            if row is None:
                return None
            _process_locked(row)
    except DatabaseError as exc:
        # Recording the outcome failed and rolled back: mark the event failed on its own, or
        # every drain would claim it first and stop on it again.
        _mark_failed(event_id, exc)
        row = WebhookEvent.objects.get(pk=event_id)
    return row


_SUCCEEDED = "payment_intent.succeeded"
_SUCCESSES = (_SUCCEEDED, "charge.succeeded")


def _success_of(row: WebhookEvent) -> IntentInfo | None:
    """The success an event reports, as an intent, if it is one a batch may apply together:
    payment_intent.succeeded, or charge.succeeded for a paid charge of an intent that lists no
    refund (what Stripe sends for every card payment, beside the intent's own event)."""
    gateway = get_gateway()
    obj = gateway.event_from_payload(row.payload).object
    if row.type == _SUCCEEDED:
        return gateway.intent_from_object(obj)
    charge = gateway.charge_from_object(obj)
    if not (charge.paid and charge.status == ChargeStatus.SUCCEEDED and charge.intent_id):
        return None
    if charge.refunds or charge.amount_refunded:
        return None
    return IntentInfo(
        id=charge.intent_id,
        status=PaymentStatus.SUCCEEDED,
        provider_status="",  # a charge does not say what its intent's status is now
        amount=charge.amount,
        currency=charge.currency,
        charge_id=charge.id,
        card_brand=charge.card_brand,
        card_last4=charge.card_last4,
    )


def _leading_run(rows: list[WebhookEvent]) -> list[tuple[WebhookEvent, IntentInfo | None]]:
    """The run of events `rows` start with that may be applied together: successes (with the
    intent each reports) and events nothing is done with (no handler, or another installation's:
    None). Any other event ends the run."""
    run: list[tuple[WebhookEvent, IntentInfo | None]] = []
    for row in rows:
        if row.type not in HANDLERS or services.is_foreign(_object_metadata(row.payload)):
            run.append((row, None))
            continue
        if row.type not in _SUCCESSES:
            break
        try:
            success = _success_of(row)
        except Exception:  # a malformed event ends the run and fails on its own
            break
        if success is None:
            break
        run.append((row, success))
    return run


def _process_batch(claimed: list[WebhookEvent]) -> list[WebhookEvent]:
    """Apply locked pending events in the caller's transaction and record their outcomes at once;
    returns the events processed (the others stay pending, for the next batch).

    Events are applied in the order they were stored: the run of successes (and of events nothing
    is done with) the claim starts with, together, or else the first event alone, as one at a
    time always did. So an earlier event of the same intent (requires_action, then succeeded)
    never lands after it, and no batch holds its locks while an event's handler calls Stripe.
    Within a run, the successes that are not plain (a duplicate, a refund first) go one by one
    after the plain ones: successes of one payment in either order end the same."""
    run = _leading_run(claimed)
    if not run:
        _process_locked(claimed[0])
        return claimed[:1]
    successes = [(index, row, intent) for index, (row, intent) in enumerate(run) if intent is not None]
    applied: set[int] = set()
    if successes:
        try:
            with transaction.atomic():
                together = services.payments_sync_succeeded(
                    [(intent, f"webhook {row.stripe_event_id} ({row.type})") for _i, row, intent in successes]
                )
            applied = {successes[position][0] for position in together}
        except Exception:
            logger.exception(
                "webhook batch: plain successes not applied together", extra={"events": len(successes)}
            )
    rows = [row for row, _intent in run]
    for index, row in enumerate(rows):
        if index in applied:
            row.attempts += 1
            row.status, row.last_error, row.processed_at = WebhookEvent.Status.PROCESSED, "", timezone.now()
            _count(row)
        else:
            _apply(row)
    update_rows(rows, ["attempts", "status", "last_error", "processed_at"])
    return rows


def _mark_failed(event_id: int, exc: Exception) -> None:
    logger.exception("webhook event could not be recorded", extra={"event_id": event_id})
    WebhookEvent.objects.filter(pk=event_id, status=WebhookEvent.Status.PENDING).update(
        status=WebhookEvent.Status.FAILED,
        attempts=F("attempts") + 1,
        last_error=f"{type(exc).__name__} while recording the outcome",
        processed_at=timezone.now(),
    )


def _process_locked(row: WebhookEvent) -> None:
    """Run the handler for a locked event row inside a savepoint and record the outcome on it."""
    _apply(row)
    row.save(update_fields=["attempts", "status", "last_error", "processed_at"])


def _apply(row: WebhookEvent) -> None:
    """Run the handler for a locked event row inside a savepoint; set the outcome on the row."""
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
            with transaction.atomic(), timeline.caused_by(f"webhook {row.stripe_event_id} ({row.type})"):
                handler(get_gateway().event_from_payload(row.payload))
        except Exception as exc:
            row.status = WebhookEvent.Status.FAILED
            row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
            logger.exception(
                "webhook event failed",
                extra={"stripe_event": row.stripe_event_id, "event_type": row.type, "attempts": row.attempts},
            )
        else:
            row.status = WebhookEvent.Status.PROCESSED
            row.last_error = ""
    row.processed_at = timezone.now()
    _count(row)


def _count(row: WebhookEvent) -> None:
    """The event's outcome and, on its first attempt, its lag, counted once this commits."""
    metrics.inc_on_commit(metrics.WEBHOOK_EVENTS, type=metrics.label(row.type), outcome=row.status)
    if row.attempts == 1 and row.received_at is not None and row.processed_at is not None:
        lag = (row.processed_at - row.received_at).total_seconds()
        transaction.on_commit(lambda: metrics.WEBHOOK_LAG.observe(lag), robust=True)


def webhook_events_replay(*, events: Iterable[WebhookEvent]) -> list[WebhookEvent]:
    """Run stored events through processing again, in the order Stripe created them; refuses
    (EventPruned, nothing replayed) when one of them was pruned."""
    events = list(events)
    for event in events:
        if event.payload_pruned_at is not None:
            raise _pruned(event)
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
