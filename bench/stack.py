"""The benchmark's own stack on loopback: a new database, its own Redis, gunicorn; stopped at exit."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests

from chaos.stack import free_port, run_sql, spawn, stop_process, wait_until

# The same server for every target: gunicorn's sync workers, as the README deploys it.
WEB_WORKERS = 3
PASSED_ON = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "LOGNAME", "VIRTUAL_ENV", "PYTHONPATH")


@dataclass
class BenchStack:
    """Starts and stops one run's processes; `env` is what each of them reads."""

    run_dir: Path
    postgres_url: str = "postgres://postgres@127.0.0.1:5432"
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    # Parts started on demand (dj-stripe's site): each has stop(), called after the processes stop.
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.database = f"bench_{os.getpid()}_{secrets.token_hex(3)}"
        self.redis_port = free_port()
        self.web_port = free_port()
        self.site_url = f"http://127.0.0.1:{self.web_port}"
        self.webhook_secret = f"whsec_{secrets.token_hex(16)}"
        self.env = {
            **{name: os.environ[name] for name in PASSED_ON if name in os.environ},
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "DEBUG": "False",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "DATABASE_URL": f"{self.postgres_url}/{self.database}",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "CACHE_URL": f"redis://127.0.0.1:{self.redis_port}/1",
            "SITE_URL": self.site_url,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "STRIPE_SECRET_KEY": "sk_test_bench",
            "STRIPE_PUBLISHABLE_KEY": "pk_test_bench",
            "STRIPE_WEBHOOK_SECRET": self.webhook_secret,
            "STRIPE_API_BASE": "http://127.0.0.1:9",  # nothing here may call Stripe
            "PYTHONUNBUFFERED": "1",
            # The per-user limits are not under test: one user starts a hundred payments.
            "THROTTLE_PAYMENTS": "100000/min",
            "THROTTLE_BOOKINGS": "100000/min",
            "THROTTLE_STATUS": "100000/min",
            "BOOKING_MAX_OPEN_HOLDS": "100000",
            "BOOKING_MAX_HELD_SEATS": "100000",
        }
        self.redis = redis.Redis(port=self.redis_port, socket_timeout=5)

    def start(self) -> None:
        self._admin(f'CREATE DATABASE "{self.database}"')
        self._spawn(
            "redis",
            [
                "redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.run_dir),
            ],
        )  # fmt: skip
        wait_until(self.redis.ping, timeout=20, what="Redis")
        if self.redis.info("server")["process_id"] != self.processes["redis"].pid:
            raise RuntimeError(f"another Redis took port {self.redis_port}")
        self.manage("migrate", "--noinput", "-v0")
        from bench.views import CREATE_TABLE

        self.sql(CREATE_TABLE)
        self._spawn(
            "web",
            [
                sys.executable, "-m", "gunicorn", "config.wsgi:application",
                "--bind", f"127.0.0.1:{self.web_port}", "--workers", str(WEB_WORKERS),
                "--timeout", "30", "--backlog", "2048",
            ],
        )  # fmt: skip
        wait_until(self._answers, timeout=60, what="gunicorn")

    def stop(self) -> None:
        for name in list(self.processes):
            stop_process(self.processes.pop(name))
        for extra in self.extras.values():
            extra.stop()
        self._admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def start_worker(self) -> None:
        """One Celery worker process (solo pool) on the default queue."""
        self._spawn(
            "worker",
            [
                sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo", "--queues=celery",
                "--loglevel=WARNING", "--hostname", "bench@%h", "--without-gossip", "--without-mingle",
            ],
        )  # fmt: skip

    def stop_worker(self) -> None:
        """Stop the Celery worker, if it runs (what it had claimed is done or rolled back)."""
        if "worker" in self.processes:
            stop_process(self.processes.pop("worker"))

    def web_workers(self, server: str = "web") -> list[int]:
        """The pids of gunicorn's workers (children of its master) of `server`."""
        master = self.processes[server].pid
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        return [int(pid) for pid in children]

    def manage(self, *args: str) -> str:
        done = subprocess.run(  # noqa: S603 - the project's own manage.py
            [sys.executable, "manage.py", *args], env=self.env, capture_output=True, text=True, check=False
        )
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def sql(self, statement: str, params: tuple | list | None = None) -> list[tuple]:
        """One statement on the run's database; its rows, if any."""
        return run_sql(f"{self.postgres_url}/{self.database}", statement, params)

    def _answers(self) -> bool:
        return requests.post(f"{self.site_url}/bench/bare/", timeout=2).status_code == 200

    def _spawn(self, name: str, command: list[str]) -> None:
        self.processes[name] = spawn(self.run_dir / f"{name}.log", command, self.env)

    def _admin(self, statement: str) -> None:
        run_sql(f"{self.postgres_url}/postgres", statement)
