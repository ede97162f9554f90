"""The chaos run's own stack on loopback: a database, a Redis it may kill, gunicorn, workers, beat."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import redis

# Time compressed (chaos/settings.py): the Stripe timeout < the request budget < gunicorn's timeout.
STRIPE_TIMEOUT = 5.0
REQUEST_BUDGET = 12.0
GUNICORN_TIMEOUT = 15
WEB_WORKERS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: S110 - not up yet
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


def spawn(log_path: Path, command: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Start `command` in a session of its own, its output appended to `log_path`."""
    log = log_path.open("ab")
    return subprocess.Popen(  # noqa: S603 - commands the stacks build
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it is still there after 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_sql(url: str, statement: str, params: tuple | list | None = None) -> list[tuple]:
    """One statement on database `url`, outside a transaction; its rows, if any."""
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


@dataclass
class Stack:
    """Starts and stops the processes of one run; `env` is what every one of them reads."""

    run_dir: Path
    stripe_url: str
    webhook_secret: str
    postgres_url: str = "postgres://postgres@127.0.0.1:5432"
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.stopped = False
        self.access_log = self.run_dir / "access.log"
        self.database = f"chaos_{os.getpid()}_{secrets.token_hex(3)}"
        self.redis_port = free_port()
        self.web_port = free_port()
        self.site_url = f"http://127.0.0.1:{self.web_port}"
        self.mail_dir = self.run_dir / "mail"
        self.mail_dir.mkdir(exist_ok=True)
        # Only the basics of this environment: a CELERY_*, STRIPE_* or DATABASE_URL of the caller's
        # must not change the run's stack.
        self.env = {
            **{name: os.environ[name] for name in _PASSED_ON if name in os.environ},
            "DJANGO_SETTINGS_MODULE": "chaos.settings",
            "DEBUG": "False",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "DATABASE_URL": f"{self.postgres_url}/{self.database}",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "CACHE_URL": f"redis://127.0.0.1:{self.redis_port}/1",
            "SITE_URL": self.site_url,
            "STRIPE_SECRET_KEY": "sk_test_chaos",
            "STRIPE_PUBLISHABLE_KEY": "pk_test_chaos",
            "STRIPE_WEBHOOK_SECRET": self.webhook_secret,
            "STRIPE_API_BASE": self.stripe_url,
            "STRIPE_JS_URL": f"{self.stripe_url}/js.stripe.com/v3/",
            "CHAOS_MAIL_DIR": str(self.mail_dir),
            # Eight bookers paying as fast as they can: the per-user limits are not under test.
            "THROTTLE_PAYMENTS": "100000/min",
            "THROTTLE_BOOKINGS": "100000/min",
            "THROTTLE_STATUS": "100000/min",
            "THROTTLE_AUTH": "1000/min",
            "THROTTLE_AUTH_ACCOUNT": "1000/min",
            "BOOKING_MAX_OPEN_HOLDS": "100000",
            "BOOKING_MAX_HELD_SEATS": "100000",
            "JWT_ACCESS_MINUTES": "240",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
        os.environ.update({name: self.env[name] for name in _OURS})

    # Lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._create_database()
        self.start_redis()
        self._manage("migrate", "--noinput", "-v0")
        self._spawn(
            "web",
            [
                sys.executable, "-m", "gunicorn", "config.wsgi:application",
                "--bind", f"127.0.0.1:{self.web_port}",
                "--workers", str(WEB_WORKERS),
                "--timeout", str(GUNICORN_TIMEOUT),
                "--graceful-timeout", "5",
                "--access-logfile", str(self.access_log),
            ],
        )  # fmt: skip
        for name in ("worker1", "worker2"):
            self.start_worker(name)
        self._spawn(
            "beat",
            [
                sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel=WARNING",
                "--schedule", str(self.run_dir / "beat-schedule"),
            ],
        )  # fmt: skip
        wait_until(self._site_answers, timeout=60, what="gunicorn")

    def stop(self, *, keep_database: bool = False) -> None:
        """Stop every process started and drop the run's database; safe to call twice."""
        if self.stopped:
            return
        self.stopped = True
        for name in list(self.processes):
            self._terminate(name)
        if not keep_database:
            self._drop_database()

    def dead(self) -> list[str]:
        """The processes of the stack that have exited."""
        return [name for name, process in self.processes.items() if process.poll() is not None]

    def count_in_logs(self, *phrases: str) -> dict[str, int]:
        """How many lines of the stack's logs hold each phrase."""
        counts = dict.fromkeys(phrases, 0)
        for log in self.run_dir.glob("*.log"):
            for line in log.read_text(errors="replace").splitlines():
                for phrase in phrases:
                    counts[phrase] += phrase in line
        return counts

    # Faults ---------------------------------------------------------------------------------------

    def start_worker(self, name: str) -> None:
        if self.stopped:
            return
        self._spawn(
            name,
            [
                sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo",
                "--loglevel=WARNING", "--hostname", f"{name}@chaos", "--without-gossip",
                "--without-mingle",
            ],
        )  # fmt: skip

    def kill_worker(self, name: str) -> None:
        """kill -9: whatever the worker had reserved stays unacknowledged in the broker."""
        if self.stopped or name not in self.processes:
            return
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def start_redis(self) -> None:
        if self.stopped:
            return
        self._spawn(
            "redis",
            [
                "redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.run_dir),
            ],
        )  # fmt: skip
        client = redis.Redis(port=self.redis_port, socket_timeout=1)
        wait_until(client.ping, timeout=20, what="Redis")
        # The port was free when chosen: make sure the Redis answering is the one started here.
        if client.info("server")["process_id"] != self.processes["redis"].pid:
            raise RuntimeError(f"another Redis took port {self.redis_port}")

    def kill_redis(self) -> None:
        """A crash: Redis keeps nothing on disk here, so the broker's queue is gone too."""
        self.kill_worker("redis")

    # Helpers --------------------------------------------------------------------------------------------

    def manage(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(  # noqa: S603 - the project's own manage.py
            [sys.executable, "manage.py", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _manage(self, *args: str) -> None:
        done = self.manage(*args)
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")

    def _spawn(self, name: str, command: list[str]) -> None:
        self.processes[name] = spawn(self.run_dir / f"{name}.log", command, self.env)

    def _terminate(self, name: str) -> None:
        stop_process(self.processes.pop(name))

    def _site_answers(self) -> bool:
        import requests

        return requests.get(f"{self.site_url}/api/events/", timeout=2).status_code < 500

    def _admin(self, sql: str) -> None:
        """Run one statement on the server's maintenance database (outside a transaction)."""
        run_sql(f"{self.postgres_url}/postgres", sql)

    def _create_database(self) -> None:
        self._admin(f'CREATE DATABASE "{self.database}"')

    def _drop_database(self) -> None:
        from django.db import connections

        connections.close_all()
        self._admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


# What the stack's processes inherit from the caller's environment.
_PASSED_ON = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "LOGNAME", "VIRTUAL_ENV", "PYTHONPATH")

# Variables the run must set in its own process too (Django there reads the same database).
_OURS = {
    "DJANGO_SETTINGS_MODULE",
    "DEBUG",
    "SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "CACHE_URL",
    "SITE_URL",
    "STRIPE_SECRET_KEY",
    "STRIPE_PUBLISHABLE_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_API_BASE",
    "CHAOS_MAIL_DIR",
}
