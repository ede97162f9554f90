"""Reconciliation at scale: `manage.py reconcile_payments --all` over N payments (1,000, 10,000 and
100,000 by default), its Stripe calls, its time and its peak memory (the process's maximum RSS).

The emulator would need hours to hold 100,000 intents, so Stripe is a stand-in at the HTTP
boundary: it serves list pages as Stripe does (newest first, `limit`, `starting_after`,
`has_more`), each intent Stripe's own example PaymentIntent with its `latest_charge` expanded (the
example Charge), made to match one local payment; the events and refunds lists are empty. Every
request it answers is counted. The local payments are rows made by the database itself.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from bench.profile import profiled
from bench.stack import BenchStack
from chaos.stack import free_port
from stripe_emulator.strict import stripe_object

SIZES = (1_000, 10_000, 100_000)
AMOUNT = 2060
PREFIX = "pi_rec"
# Stripe's page size for these lists (the gateway asks for 100).
MAX_LIMIT = 100


def _intent_template() -> list[str]:
    """Stripe's example PaymentIntent, its example Charge expanded as latest_charge, rendered to
    JSON once and cut where the index and the creation time go (a page is then string joins)."""
    charge = stripe_object(
        "charge",
        id="ch_rec@I@",
        amount=AMOUNT,
        amount_captured=AMOUNT,
        amount_refunded=0,
        currency="usd",
        payment_intent=f"{PREFIX}@I@",
        status="succeeded",
        refunded=False,
        created="@C@",
    )
    intent = stripe_object(
        "payment_intent",
        id=f"{PREFIX}@I@",
        amount=AMOUNT,
        amount_received=AMOUNT,
        currency="usd",
        status="succeeded",
        created="@C@",
        last_payment_error=None,
        latest_charge=charge,
        metadata={},
    )
    rendered = json.dumps(intent).replace('"@C@"', "@C@")
    return re.split(r"(@I@|@C@)", rendered)


class StandIn(ThreadingHTTPServer):
    """Stripe's list endpoints over `count` succeeded intents pi_rec1 (newest) … pi_rec{count}."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), _Handler)
        self.count = 0
        self.now = int(time.time())
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.template = _intent_template()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def serve(self, count: int) -> None:
        with self.lock:
            self.count, self.calls = count, Counter()

    def intent(self, index: int) -> str:
        values = {"@I@": str(index), "@C@": str(self.now - index)}
        return "".join(values.get(part, part) for part in self.template)

    def page(self, path: str, query: dict[str, list[str]]) -> tuple[int, str]:
        """The status and JSON body Stripe would answer a GET of `path` with."""
        limit = min(int(query.get("limit", ["10"])[0]), MAX_LIMIT)
        if path == "/v1/payment_intents":
            after = query.get("starting_after", [""])[0]
            first = int(after.removeprefix(PREFIX)) + 1 if after else 1
            last = min(first + limit - 1, self.count)
            data = ", ".join(self.intent(i) for i in range(first, last + 1))
            more = json.dumps(last < self.count)
            return 200, f'{{"object": "list", "url": "{path}", "has_more": {more}, "data": [{data}]}}'
        if path in ("/v1/events", "/v1/refunds"):
            return 200, json.dumps({"object": "list", "url": path, "has_more": False, "data": []})
        error = {"type": "invalid_request_error", "code": "resource_missing", "message": f"No such {path}"}
        return 404, json.dumps({"error": error})


class _Handler(BaseHTTPRequestHandler):
    server: StandIn

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        with self.server.lock:
            self.server.calls[f"GET {parts.path}"] += 1
        status, body = self.server.page(parts.path, parse_qs(parts.query))
        payload = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Request-Id", "req_bench")
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:  # reconciliation of a clean book writes nothing
        with self.server.lock:
            self.server.calls[f"POST {urlsplit(self.path).path}"] += 1
        self.send_response(400)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def fill(stack: BenchStack, count: int) -> None:
    """`count` succeeded local payments, one per intent the stand-in serves."""
    from django.contrib.contenttypes.models import ContentType

    from bookings.models import Booking

    stack.sql("TRUNCATE payments_payment, payments_webhookevent, payments_reconcilestate CASCADE")
    booking_type = ContentType.objects.get_for_model(Booking).pk
    stack.sql(
        "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff,"
        " is_active, date_joined) VALUES ('!', false, 'reconciled', '', '', 'r@example.com', false,"
        " true, now()) ON CONFLICT DO NOTHING"
    )
    owner = stack.sql("SELECT id FROM auth_user WHERE username = 'reconciled'")[0][0]
    stack.sql(
        "INSERT INTO payments_payment (content_type_id, object_id, owner_id, description, subtotal, fee,"
        " total, currency, status, attempt, uid, idempotency_key, stripe_payment_intent_id,"
        " stripe_checkout_session_id, stripe_charge_id, stripe_customer_id, stripe_status, card_brand,"
        " card_last4, last_error_code, last_error_decline_code, last_error_message, unwanted_reason,"
        " save_payment_method, confirmations, created_at, updated_at, succeeded_at)"
        " SELECT %(ct)s, (2000000000 + i)::text, %(owner)s, '1 × Concert', 2000, 60, %(amount)s, 'usd',"
        "  'succeeded', 1, gen_random_uuid(), 'reconciled-' || i, %(prefix)s || i, '', 'ch_rec' || i, '',"
        "  'succeeded', 'visa', '4242', '', '', '', '', false, 1, now() - make_interval(secs => i),"
        "  now() - make_interval(secs => i), now() - make_interval(secs => i)"
        " FROM generate_series(1, %(count)s) AS i",
        {"ct": booking_type, "owner": owner, "amount": AMOUNT, "prefix": PREFIX, "count": count},
    )
    stack.sql("VACUUM ANALYZE payments_payment")


def reconcile(stack: BenchStack, args) -> dict:
    sizes = args.reconcile_sizes or list(SIZES)
    stand_in = StandIn()
    threading.Thread(target=stand_in.serve_forever, name="stripe-stand-in", daemon=True).start()
    rows, failures = [], []
    try:
        for count in sizes:
            fill(stack, count)
            stand_in.serve(count)
            seconds, peak_mib, done = _measured(stack, stand_in, profile="reconcile" in args.profile)
            calls = sum(stand_in.calls.values())
            allowed = math.ceil(count / 100) + 10
            report = json.loads(done.stdout) if done.returncode == 0 else {}
            rows.append(
                {
                    "payments": count,
                    "stripe_calls": calls,
                    "allowed_calls": allowed,
                    "seconds": round(seconds, 1),
                    "peak_rss_mib": peak_mib,
                    "intents_checked": report.get("checked", {}).get("payment_intents"),
                    "findings": len(report.get("findings", [])),
                }
            )
            print(
                f"  reconcile {count:>7} payments: {calls} Stripe calls, {seconds:.1f} s, "
                f"peak RSS {peak_mib} MiB",
                flush=True,
            )
            if done.returncode != 0:
                failures.append(f"reconcile {count}: exit {done.returncode}: {done.stderr[-500:]}")
            elif report["checked"]["payment_intents"] != count or report["findings"]:
                failures.append(f"reconcile {count}: {report['checked']}, {len(report['findings'])} findings")
            if calls > allowed:
                failures.append(f"reconcile {count}: {calls} Stripe calls (goal ≤ {allowed})")
            if count == 10_000 and seconds >= 60:
                failures.append(f"reconcile 10,000: {seconds:.0f} s (goal < 60)")
    finally:
        stand_in.shutdown()
        stand_in.server_close()
    if len(rows) > 1:
        smallest, largest = rows[0], rows[-1]
        growth = largest["peak_rss_mib"] / smallest["peak_rss_mib"] - 1
        for row in rows:
            row["rss_vs_smallest"] = round(row["peak_rss_mib"] / smallest["peak_rss_mib"], 2)
        if growth > 0.20:
            failures.append(
                f"reconcile memory: {smallest['peak_rss_mib']} MiB at {smallest['payments']:,}, "
                f"{largest['peak_rss_mib']} MiB at {largest['payments']:,} (goal within 20 %)"
            )
    return {"rows": rows, "failures": failures}


def _measured(
    stack: BenchStack, stand_in: StandIn, *, profile: bool
) -> tuple[float, int, subprocess.CompletedProcess]:
    """Run the command; its seconds and its peak RSS in MiB, read from the kernel as it exits
    (with `profile`, sampled by py-spy, which makes it slower)."""
    env = {**stack.env, "STRIPE_API_BASE": stand_in.url}
    log = stack.run_dir / "reconcile.log"
    started = time.monotonic()
    with log.open("ab") as errors:
        process = subprocess.Popen(  # noqa: S603 - the project's own manage.py
            [sys.executable, "manage.py", "reconcile_payments", "--all", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        with profiled(stack, f"reconcile-{stand_in.count}", process.pid, on=profile):
            assert process.stdout is not None
            stdout = process.stdout.read().decode()
        # wait4, not Popen.wait: the child's own resource usage, its peak RSS among it.
        _pid, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = log.read_text(errors="replace")[-2000:]
    return (
        seconds,
        round(usage.ru_maxrss / 1024),
        subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr),
    )
