"""Payment start: the time our code adds over the Stripe calls themselves, and its SQL queries,
for a user with one earlier payment and with a thousand.

In-process: Django's test client posts `POST /api/bookings/{id}/payment/intent/` (a card,
confirmed at once) with a real JWT, Stripe is the project's emulator in a process of its own on
loopback, and every
Stripe call's own duration is read from the gateway's "stripe call" log records. What is left of
the request's time is ours: authentication, throttles, the booking and payment rows, the
idempotency keys, the booking's confirmation and its emails' rows.
"""

from __future__ import annotations

import logging
import statistics
import time

STARTS = 60
FLOWS = {
    "floor": "floor: a booking that cannot be paid (409)",
    "intent": "intent for Stripe.js",
    "confirm": "card confirmed at once",
}


class _StripeCalls(logging.Handler):
    """Collects the duration of every Stripe call the gateway logs."""

    def __init__(self) -> None:
        super().__init__()
        self.durations: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "duration_ms") and hasattr(record, "operation"):
            self.durations.append(float(record.duration_ms))


def _booking(user, event, status: str = "pending"):
    from datetime import timedelta

    from django.utils import timezone

    from bookings.models import Booking

    return Booking.objects.create(
        user=user, event=event, quantity=1, subtotal=2000, fee=60, total=2060, currency="usd", status=status,
        expires_at=timezone.now() + timedelta(minutes=15),
    )  # fmt: skip


def _history(user, count: int) -> None:
    """`count` paid payments of `user` for bookings of other events (as years of use leave)."""
    from django.contrib.contenttypes.models import ContentType

    from bookings.models import Booking
    from payments.models import Payment

    booking_type = ContentType.objects.get_for_model(Booking)
    stamp = time.monotonic_ns()
    Payment.objects.bulk_create(
        [
            Payment(
                content_type=booking_type, object_id=str(10**8 + i), owner=user, subtotal=2000, fee=60,
                total=2060, currency="usd", status="succeeded", attempt=1,
                idempotency_key=f"history-{stamp}-{i}",
                stripe_payment_intent_id=f"pi_history_{stamp}_{i}", description=f"booking {i}",
            )
            for i in range(count)
        ],
        batch_size=1000,
    )  # fmt: skip


def _starts(
    api, user, event, card: str, count: int, *, flow: str = "intent", counting: bool = False
) -> tuple[list[float], list[int], list[int]]:
    """`count` starts of `flow` ("intent", "confirm", or "floor": the same request for a booking
    that cannot be paid, answered 409): each one's time over its Stripe calls, and (`counting`)
    its SQL statements, BEGIN and COMMIT included. Counting forces Django's debug cursor, which
    formats and keeps every statement (work production, DEBUG off, never does): time runs
    without it."""
    from contextlib import nullcontext

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    calls = _StripeCalls()
    gateway_log = logging.getLogger("payments.gateway.stripe")
    gateway_log.addHandler(calls)
    gateway_log.setLevel(logging.INFO)
    overheads, queries, stripe_calls = [], [], []
    try:
        for _ in range(count):
            booking = _booking(user, event, "cancelled" if flow == "floor" else "pending")
            calls.durations.clear()
            connection.queries_log.clear()  # a full log (9,000 entries) would count nothing
            with CaptureQueriesContext(connection) if counting else nullcontext() as captured:
                started = time.perf_counter()
                response = api.post(
                    f"/api/bookings/{booking.pk}/payment/intent/",
                    {"payment_method_id": card, "confirm_immediately": True} if flow == "confirm" else {},
                    format="json",
                )
                elapsed = (time.perf_counter() - started) * 1000
            wanted = {"intent": "created", "confirm": "succeeded"}.get(flow)
            got = response.json().get("payment", {}).get("status") if response.status_code == 200 else None
            if (got, response.status_code) != (wanted, 200 if wanted else 409):
                raise RuntimeError(f"payment start failed: {response.status_code} {response.content[:300]!r}")
            overheads.append(elapsed - sum(calls.durations))
            if captured is not None:
                queries.append(len(captured))
            stripe_calls.append(len(calls.durations))
    finally:
        gateway_log.removeHandler(calls)
    return overheads, queries, stripe_calls


class _Emulator:
    """The project's Stripe emulator in a process of its own (`python -m stripe_emulator`), so
    what it does after answering never competes with the measured requests for the interpreter."""

    def __init__(self, stack) -> None:
        from chaos.stack import free_port

        self.stack = stack
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> _Emulator:
        import sys

        import requests

        from chaos.stack import free_port, spawn, wait_until

        self.process = spawn(
            self.stack.run_dir / "emulator.log",
            [
                sys.executable,
                "-m",
                "stripe_emulator",
                "--port",
                str(self.port),
                "--emulator-port",
                str(free_port()),
            ],
            self.stack.env,
        )
        wait_until(lambda: requests.get(f"{self.url}/v1/charges", timeout=2).status_code < 500, timeout=30,
                   what="the Stripe emulator")  # fmt: skip
        return self

    def __exit__(self, *exc) -> None:
        from chaos.stack import stop_process

        stop_process(self.process)

    def card(self) -> str:
        """A PaymentMethod for 4242 (as Stripe.js would make it)."""
        import requests

        response = requests.post(
            f"{self.url}/v1/payment_methods",
            data={"type": "card", "card[number]": "4242424242424242", "card[exp_month]": "12",
                  "card[exp_year]": "2034", "card[cvc]": "123"},
            headers={"Authorization": "Bearer sk_test_bench"}, timeout=10,
        )  # fmt: skip
        response.raise_for_status()
        return response.json()["id"]


def _statement_costs(user, event) -> dict[str, float]:
    """What single statements of a start cost here, in ms (median of 7 rounds of 100 runs each):
    a bare round trip, the ORM's statements of the start path, and the attempts read run as raw
    SQL, which tells PostgreSQL's share from Django's."""
    from django.db import connection, transaction

    from bookings.models import Booking
    from payments.api.serializers import PaymentSerializer
    from payments.models import Payment
    from payments.services.base import _lock_payable

    booking = _booking(user, event)
    payment = Payment.objects.filter(owner=user).order_by("-pk").first()
    new_attempt = Payment.objects.get(pk=payment.pk)
    new_attempt.mark_without_refunds()
    attempts_sql, attempts_params = Payment.objects.for_payable(booking).query.sql_with_params()

    def run(sql: str, params=()) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            cursor.fetchall()

    def lock() -> None:
        with transaction.atomic():
            _lock_payable(booking, customer_of=user)

    def transaction_of_one() -> None:
        with transaction.atomic():
            run("SELECT 1")

    statements = {
        "SELECT 1 (a round trip)": lambda: run("SELECT 1"),
        "BEGIN, SELECT 1, COMMIT": transaction_of_one,
        "BEGIN, the payable locked with the payer's customer read, COMMIT": lock,
        "the payable's attempts read (ORM)": lambda: list(Payment.objects.for_payable(booking)),
        "the same SQL run raw": lambda: run(attempts_sql, attempts_params),
        "the view's booking read (its event and user joined)": lambda: (
            Booking.objects.select_related("event", "user").filter(user=user).get(pk=booking.pk)
        ),
        "the answer's payment serializer (its refunds read)": lambda: PaymentSerializer(payment).data,
        "the same, for a new attempt (known to have none)": lambda: PaymentSerializer(new_attempt).data,
    }
    costs = {}
    for label, statement in statements.items():
        rounds = []
        for _ in range(7):
            started = time.perf_counter()
            for _ in range(100):
                statement()
            rounds.append((time.perf_counter() - started) * 10)  # ms per run: / 100 * 1000
        costs[label] = round(statistics.median(rounds), 2)
    return costs


def start(stack, args) -> dict:
    from django.conf import settings
    from django.test import override_settings
    from rest_framework.test import APIClient
    from rest_framework_simplejwt.tokens import AccessToken

    from bookings.models import Event

    emulator = _Emulator(stack)
    failures: list[str] = []
    rows = []
    with emulator, override_settings(PAYMENTS={**settings.PAYMENTS, "API_BASE": emulator.url}):
        from datetime import timedelta

        from django.contrib.auth import get_user_model
        from django.utils import timezone

        stamp = time.monotonic_ns()
        user = get_user_model().objects.create_user(f"starter-{stamp}", f"starter-{stamp}@example.com")
        host = get_user_model().objects.create_user(f"host-{stamp}", f"host-{stamp}@example.com")
        event = Event.objects.create(
            title="Start night", venue="Loopback Hall", starts_at=timezone.now() + timedelta(days=7),
            price=2000, currency="usd", capacity=100_000, host=host,
        )  # fmt: skip
        api = APIClient(HTTP_HOST="127.0.0.1")
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(user)}")
        card = emulator.card()
        # Warm-up: the user's Stripe customer, imports, caches, for both flows.
        for flow in FLOWS:
            _starts(api, user, event, card, 5, flow=flow)
        costs = _statement_costs(user, event)
        scenarios = (
            (0, "floor", "a few earlier payments"),
            (0, "intent", "a few earlier payments"),
            (0, "confirm", "a few earlier payments"),
            (1000, "intent", "1,000 more earlier payments"),
            (0, "confirm", "1,000 more earlier payments"),
        )
        for history, flow, label in scenarios:
            if history:
                _history(user, history)
            if args.profile and "start" in args.profile:
                import cProfile
                import pstats

                profile = cProfile.Profile()
                profile.enable()
                _starts(api, user, event, card, 10, flow=flow)
                profile.disable()
                out = stack.run_dir / f"profile-start-{history}-{flow}.txt"
                with out.open("w") as stream:
                    pstats.Stats(profile, stream=stream).sort_stats("cumulative").print_stats(80)
            _, queries, _ = _starts(api, user, event, card, 5, flow=flow, counting=True)
            overheads, _, stripe_calls = _starts(api, user, event, card, STARTS, flow=flow)
            ordered = sorted(overheads)
            rows.append(
                {
                    "history": label,
                    "flow": FLOWS[flow],
                    "overhead_p50_ms": round(statistics.median(ordered), 1),
                    "overhead_p90_ms": round(ordered[int(len(ordered) * 0.9)], 1),
                    "queries": sorted(set(queries)),
                    "stripe_calls": sorted(set(stripe_calls)),
                }
            )
    # This run's floor: the machine's speed varies from run to run, a ratio less.
    floor = next(r["overhead_p50_ms"] for r in rows if r["flow"] == FLOWS["floor"])
    for row in rows:
        row["x_floor"] = round(row["overhead_p50_ms"] / floor, 1) if floor else None
    for flow in {r["flow"] for r in rows}:
        counts = [r["queries"] for r in rows if r["flow"] == flow]
        if len({tuple(c) for c in counts}) != 1 or any(len(c) != 1 for c in counts):
            failures.append(f"start ({flow}): the query count varies with the history: {counts}")
    for row in rows:
        if row["overhead_p50_ms"] > 5 and row["flow"] == "intent for Stripe.js":
            over = row["overhead_p50_ms"]
            failures.append(
                f"start ({row['flow']}): {over} ms over the Stripe calls (goal ≤ 5), {row['history']}"
            )
    return {"starts": STARTS, "rows": rows, "statement_costs": costs, "failures": failures}
