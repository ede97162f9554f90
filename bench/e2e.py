"""End to end: signed events in through the endpoint, applied by one worker process.

Throughput: a backlog of N events is stored with the worker stopped, then one worker process
(Celery, solo pool) drains it; the rate is N over the time from its first to its last applied
event. Each event moves a payment to succeeded, confirms its booking and writes and enqueues its
two emails (routed to a queue nobody consumes here, so only the applying is timed).
Lag: with the worker running, events arrive at a steady rate below that throughput; the lag is
from the event's storing (the webhook's 200) to its booking's confirmation.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from datetime import timedelta
from pathlib import Path

import requests

from bench.events import card_payment, intent_succeeded, sign
from bench.profile import profiled
from bench.stack import BenchStack

EMAIL_QUEUE = "bench-emails"


def make_bookings(count: int) -> list[tuple[int, int, str, int]]:
    """`count` open booking payments: (booking id, payment id, intent id, total)."""
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType
    from django.utils import timezone

    from bookings.models import Booking, Event
    from payments.models import Payment

    stamp = time.monotonic_ns()
    user_model = get_user_model()
    host = user_model.objects.create_user(f"host-{stamp}", f"host-{stamp}@example.com")
    booker = user_model.objects.create_user(f"booker-{stamp}", f"booker-{stamp}@example.com")
    event = Event.objects.create(
        title="Benchmark night", venue="Loopback Hall", starts_at=timezone.now() + timedelta(days=7),
        price=2000, currency="usd", capacity=10 * count, host=host,
    )  # fmt: skip
    bookings = Booking.objects.bulk_create(
        [
            Booking(
                user=booker, event=event, quantity=1, subtotal=2000, fee=60, total=2060, currency="usd",
                expires_at=timezone.now() + timedelta(hours=2),
            )
            for _ in range(count)
        ],
        batch_size=2000,
    )  # fmt: skip
    booking_type = ContentType.objects.get_for_model(Booking)
    payments = Payment.objects.bulk_create(
        [
            Payment(
                content_type=booking_type, object_id=str(booking.pk), owner=booker, subtotal=2000, fee=60,
                total=2060, currency="usd", status="created", attempt=1,
                idempotency_key=f"bench-{stamp}-{booking.pk}",
                stripe_payment_intent_id=f"pi_bench_{stamp}_{i}",
                description=f"booking {booking.reference}",
            )
            for i, booking in enumerate(bookings)
        ],
        batch_size=2000,
    )  # fmt: skip
    return [
        (b.pk, p.pk, p.stripe_payment_intent_id, p.total) for b, p in zip(bookings, payments, strict=True)
    ]


def _signed(stack: BenchStack, intent_id: str, payment_id: int, total: int) -> tuple[str, bytes, str]:
    event = intent_succeeded(intent_id=intent_id, amount=total, metadata={"payment_id": str(payment_id)})
    event["data"]["object"]["currency"] = "usd"
    body = json.dumps(event, separators=(",", ":")).encode()
    return event["id"], body, sign(body, stack.webhook_secret)


def post_all(
    stack: BenchStack, items: list[tuple[str, bytes, str]], *, rate: float | None, threads: int = 8
) -> None:
    """POST every event once from `threads` keep-alive sessions, at `rate` per second in all (or at once)."""
    url = f"{stack.site_url}/api/webhooks/stripe/"
    started = time.monotonic()
    failures: list[str] = []

    def send(share: list[tuple[int, tuple[str, bytes, str]]]) -> None:
        session = requests.Session()
        for index, (_event_id, body, signature) in share:
            if rate:
                wait = started + index / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            response = session.post(
                url, data=body, headers={"Content-Type": "application/json", "Stripe-Signature": signature},
                timeout=30,
            )  # fmt: skip
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.text[:200]}")

    numbered = list(enumerate(items))
    pool = [threading.Thread(target=send, args=(numbered[i::threads],)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} events refused, e.g. {failures[0]}")


def wait_applied(stack: BenchStack, count: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = stack.sql("SELECT count(*) FROM payments_webhookevent WHERE status = 'pending'")[0][0]
        if pending == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"events still pending after {timeout:.0f} s")


def wait_confirmed(stack: BenchStack, booking_ids: list[int], *, timeout: float = 30) -> int:
    """How many of the bookings are confirmed, once all are or `timeout` has passed (a batch's
    bookings are confirmed just after its events are marked processed, by its commit's signal)."""
    deadline = time.monotonic() + timeout
    while True:
        confirmed = stack.sql(
            "SELECT count(*) FROM bookings_booking WHERE id = ANY(%s) AND status = 'confirmed'",
            (booking_ids,),
        )[0][0]
        if confirmed == len(booking_ids) or time.monotonic() >= deadline:
            return confirmed
        time.sleep(0.1)


def e2e(stack: BenchStack, args, workdir: Path) -> dict:
    failures: list[str] = []
    stack.sql("TRUNCATE payments_webhookevent")
    stack.redis.flushall()

    # Throughput: the backlog first, then one worker drains it.
    backlog = make_bookings(args.events)
    items = [_signed(stack, intent, payment, total) for _b, payment, intent, total in backlog]
    post_all(stack, items, rate=None)
    stack.start_worker()
    with profiled(stack, "worker", stack.processes["worker"].pid, on="worker" in args.profile):
        wait_applied(stack, len(items), timeout=600)
    first, last, attempts_max, count = stack.sql(
        "SELECT min(processed_at), max(processed_at), max(attempts), count(*) FROM payments_webhookevent"
    )[0]
    seconds = (last - first).total_seconds()
    rate = (count - 1) / seconds if seconds else 0.0
    confirmed = wait_confirmed(stack, [b for b, *_ in backlog])
    succeeded = stack.sql("SELECT count(*) FROM payments_payment WHERE status = 'succeeded'")[0][0]
    if not (count == confirmed == succeeded == len(backlog) and attempts_max == 1):
        failures.append(
            f"e2e: {count} events, {succeeded} payments succeeded, {confirmed} bookings confirmed, "
            f"most attempts {attempts_max} (want {len(backlog)}, once each)"
        )
    emails = stack.sql(
        "SELECT count(*) FROM bookings_emaillog WHERE booking_id = ANY(%s) AND status = 'pending'",
        ([b for b, *_ in backlog],),
    )[0][0]
    # Recorded with the confirmations, their sending enqueued in tasks of up to ten emails each.
    tasks = stack.redis.llen(EMAIL_QUEUE)
    if emails != 2 * len(backlog) or not len(backlog) / 5 <= tasks <= 2 * len(backlog):
        failures.append(
            f"e2e: {emails} emails recorded in {tasks} tasks for {len(backlog)} confirmations (want two each)"
        )

    # Stripe's mix: every card payment's three events (created, charge.succeeded, then the intent's).
    stack.stop_worker()
    mixed = make_bookings(max(1, args.events // 2))
    items = []
    for _b, payment, intent, total in mixed:
        for event in card_payment(intent_id=intent, amount=total, metadata={"payment_id": str(payment)}):
            body = json.dumps(event, separators=(",", ":")).encode()
            items.append((event["id"], body, sign(body, stack.webhook_secret)))
    stored_before = stack.sql("SELECT max(id) FROM payments_webhookevent")[0][0]
    post_all(stack, items, rate=None)
    stack.start_worker()
    wait_applied(stack, len(items), timeout=600)
    first, last, mixed_count = stack.sql(
        "SELECT min(processed_at), max(processed_at), count(*) FROM payments_webhookevent WHERE id > %s",
        (stored_before,),
    )[0]
    mixed_seconds = (last - first).total_seconds()
    mixed_rate = (mixed_count - 1) / mixed_seconds if mixed_seconds else 0.0
    mixed_confirmed = wait_confirmed(stack, [b for b, *_ in mixed])
    mixed_failed = stack.sql(
        "SELECT count(*) FROM payments_webhookevent WHERE id > %s AND status NOT IN ('processed', 'ignored')",
        (stored_before,),
    )[0][0]
    if mixed_confirmed != len(mixed) or mixed_failed or mixed_count != len(items):
        failures.append(
            f"e2e mix: {mixed_confirmed} of {len(mixed)} bookings confirmed, {mixed_failed} events not "
            f"processed, {mixed_count} of {len(items)} stored"
        )

    # Lag: a steady stream at about half that rate, the worker running.
    stream_rate = max(10.0, min(rate / 2, 300.0))
    stream = make_bookings(int(stream_rate * args.lag_seconds))
    items = [_signed(stack, intent, payment, total) for _b, payment, intent, total in stream]
    post_all(stack, items, rate=stream_rate)
    wait_applied(stack, len(items), timeout=300)
    wait_confirmed(stack, [b for b, *_ in stream])
    received = dict(
        stack.sql(
            "SELECT payload->'data'->'object'->>'id', received_at FROM payments_webhookevent"
            " WHERE stripe_event_id = ANY(%s)",
            ([event_id for event_id, _body, _sig in items],),
        )
    )
    booking_of = {intent: booking for booking, _p, intent, _t in stream}
    confirmed_at = dict(
        stack.sql(
            "SELECT id, confirmed_at FROM bookings_booking WHERE id = ANY(%s)", ([b for b, *_ in stream],)
        )
    )
    lags = sorted(
        (confirmed_at[booking_of[intent]] - at).total_seconds() * 1000
        for intent, at in received.items()
        if confirmed_at.get(booking_of[intent])
    )
    if len(lags) != len(stream):
        failures.append(f"e2e lag: {len(lags)} of {len(stream)} bookings confirmed")
    return {
        "events": len(backlog),
        "events_per_s": round(rate),
        "mix_events": 3 * len(mixed),
        "mix_events_per_s": round(mixed_rate),
        "mix_payments_per_s": round(mixed_rate / 3),
        "stream_rate": round(stream_rate),
        "lag_p50_ms": round(statistics.median(lags)) if lags else None,
        "lag_p99_ms": round(lags[min(len(lags) - 1, int(len(lags) * 0.99))]) if lags else None,
        "failures": failures,
    }
