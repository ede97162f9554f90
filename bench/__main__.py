"""`python -m bench`: the project's benchmarks on their own stack, printed as one table.

    python -m bench ack     # webhook acknowledgement beside a bare view and plain verify-and-store views
    python -m bench e2e     # events one worker process applies per second, and the lag under a stream
    python -m bench start   # what a payment start adds over its Stripe calls, and its queries
    python -m bench admin   # the admin's payment list and searches on 1,000,000 payments
    python -m bench reconcile  # reconcile_payments --all on 1,000 to 100,000 payments: calls, time, memory

Figures are ratios to the bare view measured in the same run (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import load
from bench.djstripe_target import EVENT_TABLE, DjStripe
from bench.djstripe_target import LABEL as DJSTRIPE_LABEL
from bench.events import write_events
from bench.profile import profiled
from bench.stack import WEB_WORKERS, BenchStack
from bench.views import TABLE

# Each target: (row label, path, the table its events are stored in or None).
ACK_TARGETS = {
    "bare": ("a bare Django view (read the body, answer 200)", "/bench/bare/", None),
    "plain": ("plain: construct_event + one INSERT", "/bench/plain/", TABLE),
    "floor": ("floor: verify_header + json.loads + one INSERT", "/bench/floor/", TABLE),
    "ours": ("this project's /api/webhooks/stripe/", "/api/webhooks/stripe/", "payments_webhookevent"),
    # Served by its own gunicorn from its own venv (bench/djstripe.py); path and table are its own.
    "djstripe": (DJSTRIPE_LABEL, "", EVENT_TABLE),
}
BENCHMARKS = ("ack", "e2e", "start", "reconcile", "admin")
# PAYMENTS["WEBHOOK_NUDGE_INTERVAL"] in the settings the stack runs with.
NUDGE_INTERVAL = 0.1
# Above any rate seen here, so no event is sent twice within one load.
MAX_RATE = 6000


def ack(stack: BenchStack, args: argparse.Namespace, workdir: Path, names: list[str] | None = None) -> dict:
    """Acknowledgement: every request a distinct signed event; medians of rotated rounds."""
    names = names or args.ack_targets
    djstripe = stack.extras.get("djstripe")
    if "djstripe" in names and djstripe is None:
        djstripe = stack.extras["djstripe"] = DjStripe(stack)
        djstripe.start()
    results: dict[str, list[load.Result]] = {name: [] for name in names}
    failures: list[str] = []
    for round_no in range(args.rounds):
        order = names[round_no % len(names) :] + names[: round_no % len(names)]
        for name in order:
            _label, path, table = ACK_TARGETS[name]
            stack.sql(f"TRUNCATE {TABLE}, payments_webhookevent")
            if djstripe is not None:
                djstripe.sql(
                    "TRUNCATE djstripe_webhookeventtrigger, djstripe_event, djstripe_paymentintent CASCADE"
                )
            stack.redis.flushall()
            warm, measured = workdir / "warm.events", workdir / "measured.events"
            write_events(warm, int(MAX_RATE * args.warmup) + 1000, stack.webhook_secret)
            write_events(measured, int(MAX_RATE * args.duration) + 1000, stack.webhook_secret)
            url = (
                f"{djstripe.url}{djstripe.path}"
                if name == "djstripe" and djstripe
                else f"{stack.site_url}{path}"
            )
            first = load.run(url, warm, seconds=args.warmup, connections=args.connections)
            worker = stack.web_workers("djstripe" if name == "djstripe" else "web")[0]
            with profiled(stack, f"{name}-{round_no + 1}", worker, on=name in args.profile):
                result = load.run(url, measured, seconds=args.duration, connections=args.connections)
            time.sleep(1)  # requests in flight when the load stopped finish before anything is counted
            results[name].append(result)
            print(
                f"  round {round_no + 1} {name:6} {result.rate:8.0f} req/s  p99 {result.p99_ms:6.1f} ms"
                f"  non-2xx {result.non2xx}",
                flush=True,
            )
            if result.non2xx or result.socket_errors:
                failures.append(f"{name}: {result.non2xx} non-2xx, {result.socket_errors} socket errors")
            if table:
                acknowledged = first.requests + result.requests - first.non2xx - result.non2xx
                count_sql = f"SELECT count(*), count(DISTINCT {_id_column(table)}) FROM {table}"  # noqa: S608
                stored = (
                    djstripe.sql(count_sql) if name == "djstripe" and djstripe else stack.sql(count_sql)
                )[0]
                # wrk stops with up to one request per connection in flight: stored, not counted.
                if not (
                    stored[0] == stored[1]
                    and acknowledged <= stored[0] <= acknowledged + 2 * args.connections
                ):
                    failures.append(f"{name}: {acknowledged} acknowledged, {stored[0]} stored")
            if name == "ours":
                # The rows are the queue: each load leaves them pending for the drain task, nudged
                # at most once per WEBHOOK_NUDGE_INTERVAL per web worker (no worker runs here).
                pending = stack.sql("SELECT count(*) FROM payments_webhookevent WHERE status = 'pending'")[0][
                    0
                ]
                nudges = stack.redis.llen("celery")
                seconds = args.warmup + args.duration + 2
                most = int(seconds / NUDGE_INTERVAL + 2) * WEB_WORKERS
                if not (pending == stored[0] and 1 <= nudges <= most):
                    failures.append(f"ours: {pending} of {stored[0]} pending, {nudges} nudges (1 to {most})")
    bare = statistics.median(r.rate for r in results["bare"])
    rows = []
    for name in names:
        rate = statistics.median(r.rate for r in results[name])
        p99 = statistics.median(r.p99_ms for r in results[name])
        rows.append(
            {
                "target": ACK_TARGETS[name][0],
                "req_s": round(rate),
                "p99_ms": round(p99, 1),
                "x_bare": round(rate / bare, 2),
            }
        )
    return {"rows": rows, "failures": failures}


def _with_djstripe(args: argparse.Namespace) -> list[str]:
    """The benchmarks to run: e2e is read against dj-stripe's acknowledgement in the same run, so
    without ack (or ack without dj-stripe) dj-stripe is measured on its own first."""
    if "e2e" in args.what and not ("ack" in args.what and "djstripe" in args.ack_targets):
        return ["djstripe", *args.what]
    return list(args.what)


def _djstripe_rate(report: dict) -> float | None:
    for name in ("ack", "djstripe"):
        for row in report.get(name, {}).get("rows", []):
            if row["target"] == DJSTRIPE_LABEL:
                return float(row["req_s"])
    return None


def run_one(name: str, stack: BenchStack, args: argparse.Namespace, workdir: Path) -> dict:
    """Run benchmark `name`; its report (figures and failures)."""
    if name == "ack":
        return ack(stack, args, workdir)
    if name == "djstripe":
        return ack(stack, args, workdir, names=["bare", "djstripe"])
    _django_for(stack)
    if name == "e2e":
        from bench.e2e import e2e

        return e2e(stack, args, workdir)
    if name == "start":
        from bench.start import start

        return start(stack, args)
    if name == "reconcile":
        from bench.reconcile import reconcile

        return reconcile(stack, args)
    from bench.admin import admin

    return admin(stack, args)


def _django_for(stack: BenchStack) -> None:
    """Django in this process, on the run's database (to set up rows and read results)."""
    os.environ.update({k: v for k, v in stack.env.items() if k not in ("PATH", "HOME")})
    import django

    django.setup()


def _id_column(table: str) -> str:
    return {"payments_webhookevent": "stripe_event_id", EVENT_TABLE: "id"}.get(table, "event_id")


def table(rows: list[dict]) -> str:
    lines = ["| target | req/s | p99 ms | × bare |", "|---|---|---|---|"]
    lines += [f"| {r['target']} | {r['req_s']} | {r['p99_ms']} | {r['x_bare']:.2f} |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="*", help="which benchmarks: ack (default: all)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per load")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up before each")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, targets rotated each round")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--ack-targets", nargs="*", default=list(ACK_TARGETS), choices=list(ACK_TARGETS),
        help="ack: which targets (default: all, dj-stripe among them)",
    )  # fmt: skip
    parser.add_argument("--events", type=int, default=2000, help="e2e: events in the backlog")
    parser.add_argument("--lag-seconds", type=float, default=10.0, help="e2e: seconds of the steady stream")
    parser.add_argument("--payments", type=int, default=1_000_000, help="admin: payments in the table")
    parser.add_argument(
        "--reconcile-sizes",
        type=int,
        nargs="*",
        default=None,
        help="reconcile: payment counts (1000 10000 100000)",
    )
    parser.add_argument(
        "--profile", nargs="*", default=[], help="targets to profile with py-spy (one web worker)"
    )
    args = parser.parse_args()
    args.what = args.what or list(BENCHMARKS)
    if unknown := set(args.what) - set(BENCHMARKS):
        parser.error(f"unknown benchmark {sorted(unknown)}; choose from {list(BENCHMARKS)}")

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = Path("artifacts/bench") / f"{stamp}-{os.getpid()}"
    stack = BenchStack(run_dir)
    report: dict = {
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "generator": load.generator(),
        "started": stamp,
    }
    print(f"==> bench: {report['machine']}, load by {report['generator']}, run folder {run_dir}", flush=True)
    try:
        stack.start()
        with tempfile.TemporaryDirectory() as workdir:
            for name in _with_djstripe(args):
                started = time.monotonic()
                try:
                    report[name] = run_one(name, stack, args, Path(workdir))
                except Exception as exc:  # one benchmark's crash must not lose the others' figures
                    logging.exception("benchmark %s crashed", name)
                    report[name] = {"crashed": f"{type(exc).__name__}: {exc}"}
                report[name]["seconds"] = round(time.monotonic() - started)
    finally:
        stack.stop()
    failures: list[str] = [
        f"{name}: crashed: {report[name]['crashed']}"
        for name in ("djstripe", *BENCHMARKS)
        if "crashed" in report.get(name, {})
    ]
    if "ack" in report and "rows" in report["ack"]:
        print(
            f"\nWebhook acknowledgement ({args.connections} connections, {args.duration:.0f} s per load, "
            f"medians of {args.rounds} rounds)\n"
        )
        print(table(report["ack"]["rows"]))
        failures += report["ack"]["failures"]
    if "djstripe" in report and "rows" in report["djstripe"]:
        row = report["djstripe"]["rows"][-1]
        print(f"\n{row['target']}: {row['req_s']} req/s, p99 {row['p99_ms']} ms (the end to end reference)")
        failures += report["djstripe"]["failures"]
    if "e2e" in report and "events" in report["e2e"]:
        e = report["e2e"]
        reference = _djstripe_rate(report)
        print(
            f"\nEnd to end (one worker process, solo pool): {e['events_per_s']} events/s applied "
            f"({e['events']} events: payment succeeded, booking confirmed, two emails recorded, enqueued); "
            f"lag from the webhook's 200 to the booking confirmed at {e['stream_rate']} events/s: "
            f"p50 {e['lag_p50_ms']} ms, p99 {e['lag_p99_ms']} ms"
        )
        print(
            f"  Stripe's mix for card payments ({e['mix_events']} events: payment_intent.created, "
            f"charge.succeeded, payment_intent.succeeded each): {e['mix_events_per_s']} events/s, "
            f"{e['mix_payments_per_s']} payments confirmed/s"
        )
        failures += e["failures"]
        if reference:
            e["x_djstripe"] = round(e["events_per_s"] / reference, 1)
            print(
                f"  = {e['x_djstripe']} × what dj-stripe acknowledges in this run ({reference:.0f}/s;"
                " goal ≥ 10 ×)"
            )
            if e["x_djstripe"] < 10:
                failures.append(f"e2e: {e['x_djstripe']} × dj-stripe's acknowledgement (goal ≥ 10 ×)")
    if "start" in report and "rows" in report["start"]:
        st = report["start"]
        print(f"\nPayment start ({st['starts']} starts each, in-process, Stripe the emulator)\n")
        print(
            "| flow | user's history | ours p50 ms | × floor | ours p90 ms | SQL statements | Stripe calls |"
        )
        print("|---|---|---|---|---|---|---|")
        for row in st["rows"]:
            cells = (
                row["flow"], row["history"], row["overhead_p50_ms"], row["x_floor"], row["overhead_p90_ms"],
                "/".join(map(str, row["queries"])), "/".join(map(str, row["stripe_calls"])),
            )  # fmt: skip
            print("| " + " | ".join(str(cell) for cell in cells) + " |")
        print("\n| one statement of a start, in-process | ms |\n|---|---|")
        for label, cost in st["statement_costs"].items():
            print(f"| {label} | {cost} |")
        failures += st["failures"]
    if "reconcile" in report and "rows" in report["reconcile"]:
        print("\nReconciliation (reconcile_payments --all, Stripe a stand-in serving list pages)\n")
        print("| payments | Stripe calls | allowed | seconds | peak RSS MiB | × smallest |")
        print("|---|---|---|---|---|---|")
        for row in report["reconcile"]["rows"]:
            cells = (
                f"{row['payments']:,}", row["stripe_calls"], row["allowed_calls"], row["seconds"],
                row["peak_rss_mib"], row.get("rss_vs_smallest", 1.0),
            )  # fmt: skip
            print("| " + " | ".join(str(cell) for cell in cells) + " |")
        failures += report["reconcile"]["failures"]
    if "admin" in report and "rows" in report["admin"]:
        a = report["admin"]
        print(f"\nAdmin on {a['payments']:,} payments (server time in-process, median of 5)\n")
        print("| page | ms | queries | rows shown | slowest query ms |\n|---|---|---|---|---|")
        for row in a["rows"]:
            cells = (row["page"], row["ms"], row["queries"], row["rows"], row["slowest_query_ms"])
            print("| " + " | ".join(str(cell) for cell in cells) + " |")
        for row in a["rows"]:
            print(f"  slowest query of {row['page']}: {row['slowest_query'][:160]}")
        failures += a["failures"]
    (run_dir / "results.json").write_text(json.dumps(report, indent=2))
    for failure in failures:
        print(f"FAILED: {failure}")
    print(f"\n{'FAIL' if failures else 'ok'}: results in {run_dir / 'results.json'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
