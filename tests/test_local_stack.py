"""The local stack exactly as `./scripts/run` starts it (SQLite under its run directory, the
emulator, runserver) holds under concurrent bookers, without Redis too, and `./scripts/manage`
works against it."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import requests
from django.conf import settings as django_settings

from chaos.stack import free_port, spawn, stop_process, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.emulator]

ROOT = Path(django_settings.BASE_DIR)
KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "CI", "VIRTUAL_ENV")


def _two_free_ports() -> int:
    """A port whose next one is free too (the emulator's proxy and localstripe behind it)."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two free ports side by side")


@dataclass
class LocalStack:
    """One `./scripts/run` in a run directory of its own, on free ports."""

    run_dir: Path
    redis_url: str
    port: int = field(default_factory=free_port)
    stripe_port: int = field(default_factory=_two_free_ports)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = {name: os.environ[name] for name in KEEP if name in os.environ}
        env.update(
            RUN_DIR=str(self.run_dir),
            PORT=str(self.port),
            STRIPE_EMULATOR_PORT=str(self.stripe_port),
            REDIS_URL=self.redis_url,
            PYTHONUNBUFFERED="1",
        )
        return env

    @property
    def log(self) -> str:
        return (self.run_dir / "run.log").read_text(errors="replace")

    def start(self) -> None:
        self.process = spawn(self.run_dir / "run.log", ["bash", str(ROOT / "scripts/run")], self.env)
        wait_until(lambda: "Ctrl-C stops everything" in self.log, timeout=180, what="./scripts/run")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # Ctrl-C: scripts/run stops what it started.
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                stop_process(self.process)

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(ROOT / "scripts/manage"), *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Read the stack's database as it is now (WAL: never blocks its writers)."""
        connection = sqlite3.connect(f"file:{self.run_dir / 'db.sqlite3'}?mode=ro", uri=True, timeout=30)
        try:
            return connection.execute(sql, params).fetchall()
        finally:
            connection.close()

    def card(self, number: str = "4242424242424242") -> str:
        """A PaymentMethod, as Stripe.js makes one in the browser."""
        response = requests.post(
            f"http://127.0.0.1:{self.stripe_port + 1}/v1/payment_methods",
            data={
                "type": "card",
                "card[number]": number,
                "card[exp_month]": "12",
                "card[exp_year]": "2034",
                "card[cvc]": "123",
            },
            headers={"Authorization": "Bearer sk_test_local"},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()["id"]

    def add_users(self, count: int) -> list[str]:
        names = [f"booker{n}" for n in range(count)]
        script = (
            "from django.contrib.auth import get_user_model as m\n"
            f"for name in {names!r}:\n"
            "    m().objects.filter(username=name).exists() or "
            "m().objects.create_user(name, name + '@example.com', 'pass-word-123')\n"
        )
        done = self.manage("shell", "-c", script)
        assert done.returncode == 0, done.stderr
        return names

    def session(self, username: str, password: str = "pass-word-123") -> requests.Session:
        session = requests.Session()
        answer = session.post(
            f"{self.url}/api/auth/token/", json={"username": username, "password": password}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        session.headers["Authorization"] = f"Bearer {answer.json()['access']}"
        return session

    def book(self, session: requests.Session, event_id: int, quantity: int = 1) -> int:
        answer = session.post(
            f"{self.url}/api/bookings/", json={"event": event_id, "quantity": quantity}, timeout=30
        )
        assert answer.status_code == 201, answer.text
        return answer.json()["id"]

    def event_ids(self) -> list[int]:
        return [row[0] for row in self.rows("SELECT id FROM bookings_event ORDER BY capacity DESC")]


def _start(tmp_path_factory, name: str, redis_url: str) -> LocalStack:
    stack = LocalStack(run_dir=tmp_path_factory.mktemp(name), redis_url=redis_url)
    try:
        stack.start()
    except Exception:
        stack.stop()
        raise
    return stack


@pytest.fixture(scope="module")
def with_redis(tmp_path_factory):
    """The default local stack: a Celery worker and beat on a Redis of its own."""
    run_dir = tmp_path_factory.mktemp("redis")
    port = free_port()
    server = spawn(
        run_dir / "redis.log",
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        {"PATH": os.environ["PATH"]},
    )
    try:
        wait_until(redis.Redis(port=port, socket_timeout=1).ping, timeout=20, what="Redis")
        stack = _start(tmp_path_factory, "stack-redis", f"redis://127.0.0.1:{port}/0")
        yield stack
        stack.stop()
    finally:
        stop_process(server)


@pytest.fixture(scope="module")
def without_redis(tmp_path_factory):
    """The development fallback: no Redis answers, tasks run in the web process."""
    stack = _start(tmp_path_factory, "stack-inline", f"redis://127.0.0.1:{free_port()}/0")
    yield stack
    stack.stop()


def _pay(stack: LocalStack, session: requests.Session, booking_id: int) -> requests.Response:
    return session.post(
        f"{stack.url}/api/bookings/{booking_id}/payment/intent/",
        json={"payment_method_id": stack.card(), "confirm_immediately": True},
        timeout=60,
    )


def _confirmed(stack: LocalStack, booking_ids: list[int]) -> bool:
    marks = ",".join("?" * len(booking_ids))
    statuses = stack.rows(f"SELECT status FROM bookings_booking WHERE id IN ({marks})", tuple(booking_ids))
    return len(statuses) == len(booking_ids) and all(status == "confirmed" for (status,) in statuses)


def _no_lost_webhook(stack: LocalStack) -> None:
    """Every event the emulator sent was stored and processed."""
    sent = requests.get(
        f"http://127.0.0.1:{stack.stripe_port + 1}/v1/events",
        params={"limit": 100},
        headers={"Authorization": "Bearer sk_test_local"},
        timeout=10,
    ).json()["data"]
    assert sent, "the emulator sent no events"

    def all_processed() -> bool:
        stored = dict(stack.rows("SELECT stripe_event_id, status FROM payments_webhookevent"))
        return all(stored.get(event["id"]) in ("processed", "ignored") for event in sent)

    wait_until(all_processed, timeout=60, what="every webhook event processed")


def _concurrent_payments_hold(stack: LocalStack) -> None:
    log_from = len(stack.log)
    names = stack.add_users(8)
    booker = stack.session("booker", "booker-pass-123")
    big_event, *_ = stack.event_ids()

    # Ten clicks at once on one booking: all answered, one intent.
    booking_id = stack.book(booker, big_event)
    with ThreadPoolExecutor(10) as pool:
        answers = list(
            pool.map(
                lambda _: booker.post(
                    f"{stack.url}/api/bookings/{booking_id}/payment/intent/", json={}, timeout=60
                ),
                range(10),
            )
        )
    assert [a.status_code for a in answers] == [200] * 10, [a.text for a in answers if a.status_code != 200]
    assert len({a.json()["client_secret"] for a in answers}) == 1

    # Eight bookers paying at once: all charged, all confirmed.
    sessions = [stack.session(name) for name in names]
    bookings = [stack.book(session, big_event) for session in sessions]
    with ThreadPoolExecutor(8) as pool:
        paid = list(pool.map(lambda pair: _pay(stack, *pair), zip(sessions, bookings, strict=True)))
    assert [a.status_code for a in paid] == [200] * 8, [a.text for a in paid if a.status_code != 200]
    assert {a.json()["payment"]["status"] for a in paid} <= {"succeeded", "processing"}
    wait_until(lambda: _confirmed(stack, bookings), timeout=60, what="every paid booking confirmed")
    _no_lost_webhook(stack)
    requests.get(f"{stack.url}/favicon.ico", timeout=10)  # what every browser asks for
    wait_until(
        lambda: stack.log[log_from:].count("Subject: Booking confirmed") >= 8, timeout=60, what="emails"
    )
    log = stack.log[log_from:]
    assert "database is locked" not in log
    assert "Traceback" not in log, log[-5000:]
    # Quiet and readable: emails printed as emails, no warnings a developer can do nothing about.
    assert "WARNING" not in log, [line for line in log.splitlines() if "WARNING" in line][:5]
    assert "Not Found" not in log
    assert "InsecureKeyLengthWarning" not in stack.log
    assert "socket.socket" not in log


def test_concurrent_bookers_with_a_worker(with_redis):
    _concurrent_payments_hold(with_redis)


def test_concurrent_bookers_without_redis(without_redis):
    _concurrent_payments_hold(without_redis)


def test_health_without_redis_is_inline_development(without_redis):
    answer = requests.get(f"{without_redis.url}/health/", timeout=10)
    assert answer.status_code == 200, answer.text
    assert "inline (development)" in answer.text


def test_an_expired_hold_is_released_without_redis(without_redis):
    """No beat without Redis: the web process runs its schedule, so a hold that ran out is
    released within a minute (the hold expiry entry's interval)."""
    stack = without_redis
    (name,) = stack.add_users(1)
    booking_id = stack.book(stack.session(name), stack.event_ids()[2])
    writer = sqlite3.connect(stack.run_dir / "db.sqlite3", timeout=30)
    with writer:  # the hold runs out now
        writer.execute(
            "UPDATE bookings_booking SET expires_at = '2000-01-01 00:00:00' WHERE id = ?", (booking_id,)
        )
    writer.close()
    ran_out = time.monotonic()
    wait_until(
        lambda: stack.rows("SELECT status FROM bookings_booking WHERE id = ?", (booking_id,))
        == [("expired",)],
        timeout=120,
        what="the hold released",
    )
    # The expiry entry runs every 60 s: a hold is released within a minute of running out.
    assert time.monotonic() - ran_out < 60 + 15


def test_manage_works_against_the_running_stack(with_redis):
    checked = with_redis.manage("check")
    assert checked.returncode == 0, checked.stderr
    reconciled = with_redis.manage("reconcile_payments", "--all", "--dry-run")
    assert reconciled.returncode == 0, reconciled.stderr
    assert "Traceback" not in reconciled.stderr


def test_a_charge_whose_recording_fails_is_not_an_error(with_redis):
    """Stripe takes the money, then our write fails: the payer reads that it was received (never
    "try another card"), and the booking ends confirmed once the database answers again."""
    stack = with_redis
    (name,) = stack.add_users(1)
    session = stack.session(name)
    booking_id = stack.book(session, stack.event_ids()[1])
    writer = sqlite3.connect(stack.run_dir / "db.sqlite3", timeout=30)
    writer.execute(
        "CREATE TRIGGER refuse_success BEFORE UPDATE OF status ON payments_payment "
        "WHEN NEW.status = 'succeeded' BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
    )
    writer.commit()
    try:
        answer = _pay(stack, session, booking_id)
        assert answer.status_code == 200, answer.text
        assert answer.json()["payment"]["status"] == "succeeded"
        assert "another card" not in answer.text
        stored = stack.rows("SELECT status FROM payments_payment WHERE object_id = ?", (str(booking_id),))
        assert stored == [("created",)], "the trigger did not refuse the write"
    finally:
        writer.execute("DROP TRIGGER refuse_success")
        writer.commit()
        writer.close()

    def confirmed_by_the_status_page() -> bool:  # what the result page polls
        session.get(f"{stack.url}/api/bookings/{booking_id}/payment/status/", timeout=30)
        return _confirmed(stack, [booking_id])

    wait_until(confirmed_by_the_status_page, timeout=60, what="the booking confirmed")
