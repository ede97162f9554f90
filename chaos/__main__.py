"""The chaos run: python -m chaos --help (./scripts/chaos runs it with the project's venv).

It starts its own stack on loopback (PostgreSQL database, Redis, gunicorn, two Celery workers and
beat, the Stripe emulator behind a proxy that faults a share of the server's Stripe requests),
sends bookings from concurrent bookers while it kills workers, restarts Redis and cuts Stripe off,
then drains, reconciles and checks the invariants: one line each, exit status 1 if any fails.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import random
import secrets
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from chaos.bookers import Booker, Client, Load, Tally, pick_plan
from chaos.faults import FaultPolicy
from chaos.invariants import check_all, parse_reconcile
from chaos.stack import STRIPE_TIMEOUT, Stack, wait_until

PASSWORD = "chaos-booker-pass-123"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.split("\n\n")[1])
    parser.add_argument("--bookings", type=int, default=1000, help="bookings in all (default 1000)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent bookers (default 8)")
    parser.add_argument("--fault-rate", type=float, default=0.2, help="share of Stripe requests faulted")
    parser.add_argument("--kills", type=int, default=3, help="kill -9 of a Celery worker (default 3)")
    parser.add_argument("--redis-restarts", type=int, default=2, help="Redis crashes (default 2)")
    parser.add_argument("--outages", type=int, default=2, help="Stripe unreachable (default 2)")
    parser.add_argument("--outage-seconds", type=float, default=6.0)
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="seconds to wait for the drain")
    parser.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="seconds for the load in all (default: 60 + 3 per booking)",
    )
    parser.add_argument("--seed", type=int, default=None, help="for a reproducible mix of plans and faults")
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=Path("artifacts/chaos"),
        help="each run's logs and emails go in a new folder here",
    )
    parser.add_argument("--keep-database", action="store_true", help="leave the run's database behind")
    return parser.parse_args()


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main() -> int:
    args = parse_args()
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    rng = random.Random(seed)  # noqa: S311 - a reproducible run
    run_dir = args.run_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    run_dir.mkdir(parents=True)  # a folder of this run's own: never another run's files

    from localstripe.resources import store

    from stripe_emulator.harness import StripeHarness

    harness = StripeHarness().start()
    secret = "whsec_chaos_" + secrets.token_hex(16)
    stack = Stack(run_dir=run_dir, stripe_url=harness.url, webhook_secret=secret)
    faults = FaultPolicy(rate=args.fault_rate, stall=STRIPE_TIMEOUT + 1.0, seed=seed)
    say(f"seed {seed}; logs in {run_dir}/")
    # Whatever ends this process (an error, Ctrl-C, a CI timeout's SIGTERM), the stack goes with it.
    atexit.register(stack.stop, keep_database=args.keep_database)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    try:
        stack.start()
        harness.api(
            "POST", "/_config/webhooks/chaos", url=f"{stack.site_url}/api/webhooks/stripe/", secret=secret
        )
        import django

        django.setup()
        # localstripe logs every webhook it delivers; the run's own lines are what matter here.
        for name in ("aiohttp.access", "localstripe", "stripe_emulator"):
            logging.getLogger(name).setLevel(logging.WARNING)
        event_id = _prepare(args.clients)
        say(f"stack up: site {stack.site_url}, Stripe {harness.url}; {args.bookings} bookings")
        harness.fault_policy = faults
        load = _load(args, stack, harness, faults, event_id, rng)
        harness.fault_policy = None
        say(f"load done: faults injected in {faults.share():.1%} of {faults.seen} Stripe requests")
        _drain(args.drain_timeout, stack)
        # Read-only: a repair by reconciliation would hide what the other checks look for.
        done = stack.manage("reconcile_payments", "--all", "--dry-run", "--json")
        reconcile = parse_reconcile(done.stdout, done.stderr, done.returncode)
        checks = check_all(
            store=harness._in_loop(lambda: dict(store)),
            load=load,
            mail_dir=stack.mail_dir,
            access_log=stack.access_log,
            reconcile=reconcile,
        )
        _report(args, seed, load, faults, stack, checks)
        return 0 if all(c.ok for c in checks) else 1
    finally:
        stack.stop(keep_database=args.keep_database)


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)  # runs the finally blocks and atexit: the stack is stopped


def _prepare(clients: int) -> int:
    """Staff who may refund, one booker per client, one big event; returns the event's id."""
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from django.utils import timezone

    from bookings.models import Event

    user_model = get_user_model()
    host = user_model.objects.create_user("chaos-host", "host@chaos.test", PASSWORD)
    staff = user_model.objects.create_user("chaos-staff", "staff@chaos.test", PASSWORD, is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="refund_payment"))
    for n in range(clients):
        user_model.objects.create_user(f"chaos-booker-{n}", f"booker{n}@chaos.test", PASSWORD)
    event = Event.objects.create(
        title="Chaos night",
        venue="Loopback",
        starts_at=timezone.now() + timedelta(days=30),
        price=2500,
        currency="usd",
        capacity=1_000_000,
        host=host,
    )
    return event.pk


def _load(args, stack: Stack, harness, faults: FaultPolicy, event_id: int, rng: random.Random) -> Load:
    deadline = time.monotonic() + (args.deadline or 60 + 3 * args.bookings)
    load = Load(tally=Tally())
    staff = Client(stack.site_url, harness.url, "pk_test_chaos", load.tally)
    staff.login("chaos-staff", PASSWORD)
    bookers = []
    for n in range(args.clients):
        client = Client(stack.site_url, harness.url, "pk_test_chaos", load.tally)
        client.login(f"chaos-booker-{n}", PASSWORD)
        bookers.append(Booker(client, staff, random.Random(rng.random()), deadline=deadline))  # noqa: S311
    queue = [pick_plan(rng) for _ in range(args.bookings)]
    lock = threading.Lock()
    stop = threading.Event()

    def work(booker: Booker) -> None:
        while not stop.is_set():
            with lock:
                if not queue:
                    return
                if time.monotonic() > deadline:
                    load.not_run += len(queue)
                    queue.clear()
                    return
                plan = queue.pop(0)
            outcome = booker.run(event_id, plan)
            with lock:
                load.finished += 1
                if outcome is None:
                    load.not_created += 1
                else:
                    load.outcomes.append(outcome)

    watcher = threading.Thread(
        target=_disrupt, args=(_schedule(args, rng), load, args.bookings, stack, faults, args, stop)
    )
    watcher.start()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(args.clients) as pool:
            for future in [pool.submit(work, booker) for booker in bookers]:
                future.result()
    finally:
        stop.set()  # on any error too: no booker starts another booking, no disruption follows
        watcher.join()
    say(f"{len(load.outcomes)} bookings in {time.monotonic() - started:.0f} s")
    return load


def _schedule(args, rng: random.Random) -> list[tuple[float, str]]:
    """When (as a share of finished bookings) each disruption happens, spread over the load."""
    events = [("kill", args.kills), ("redis", args.redis_restarts), ("outage", args.outages)]
    plan = [(rng.uniform(0.1, 0.85), name) for name, count in events for _ in range(count)]
    return sorted(plan)


def _disrupt(plan, load: Load, total, stack: Stack, faults: FaultPolicy, args, stop: threading.Event) -> None:
    workers = ["worker1", "worker2"]
    for at, name in plan:
        while load.finished < at * total and not stop.is_set():
            time.sleep(0.2)
        if stop.is_set():
            say(f"load ended before the {name} planned at {at:.0%}")
            continue
        if name == "kill":
            worker = workers[int(at * 1000) % 2]
            say(f"kill -9 {worker}")
            stack.kill_worker(worker)
            time.sleep(2)
            stack.start_worker(worker)
        elif name == "redis":
            say("Redis crashes (its queue is lost); back in 3 s")
            stack.kill_redis()
            time.sleep(3)
            stack.start_redis()
        else:
            say(f"Stripe unreachable for {args.outage_seconds:.0f} s")
            faults.outage(args.outage_seconds)
        load.disruptions[name] += 1


def _drain(timeout: float, stack: Stack) -> None:
    """Wait until nothing is left to do: no refund, email or webhook event pending, no payment
    moving. The sweeps (beat) deliver what lost tasks left behind."""
    from django.db import close_old_connections

    from bookings.models import EmailLog
    from payments.models import Refund, WebhookEvent

    def quiet() -> bool:
        dead = stack.dead()
        if dead:
            raise SystemExit(f"the drain cannot finish: {', '.join(dead)} exited (see its log)")
        close_old_connections()
        return not (
            Refund.objects.filter(status__in=["pending", "requires_action"]).exists()
            or EmailLog.objects.filter(status__in=["pending", "sending"]).exists()
            or WebhookEvent.objects.filter(status="pending").exists()
        )

    started = time.monotonic()
    say("draining: waiting for refunds, emails and webhook events to settle")
    try:
        wait_until(quiet, timeout=timeout, what="the drain")
        time.sleep(5)  # events Stripe sends after the last write
        wait_until(quiet, timeout=timeout, what="the drain")
    except RuntimeError as error:
        say(str(error))
    say(f"drained in {time.monotonic() - started:.0f} s")


def _report(args, seed, load: Load, faults: FaultPolicy, stack: Stack, checks) -> None:
    from collections import Counter

    plans = Counter(o.plan.name for o in load.outcomes)
    tally = load.tally
    print()
    print(f"chaos run: {len(load.outcomes)} bookings, {args.clients} clients, seed {seed}")
    print("plans: " + ", ".join(f"{name} {count}" for name, count in plans.most_common()))
    print(
        f"faults: {sum(faults.injected.values())} of {faults.seen} Stripe requests "
        f"({faults.share():.1%}): " + ", ".join(f"{k} {v}" for k, v in faults.injected.most_common())
    )
    done = load.disruptions
    print(
        f"disruptions: {done['kill']} worker kills, {done['redis']} Redis crashes, "
        f"{done['outage']} Stripe outages of {args.outage_seconds:.0f} s"
    )
    logged = stack.count_in_logs("could not enqueue task", "throttle cache unavailable")
    print(
        f"while Redis was down: {logged['could not enqueue task']} enqueues failed (left to the sweeps), "
        f"throttles let {logged['throttle cache unavailable']} requests through"
    )
    print("HTTP answers: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.statuses.items())))
    print(f"connection errors and timeouts seen by clients: {tally.transport_errors}")
    print()
    for check in checks:
        print(check.line())
    (stack.run_dir / "invariants.txt").write_text("".join(c.line() + "\n" for c in checks))
    failed = sum(1 for c in checks if not c.ok)
    print()
    print("chaos run: " + ("all invariants hold" if not failed else f"{failed} invariants FAILED"))


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parent.parent)
    sys.exit(main())
