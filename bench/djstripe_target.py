"""dj-stripe beside us: its webhook view served by the same gunicorn, on the run's PostgreSQL.

dj-stripe needs stripe < 16, so it runs from a venv of its own (`bench/djstripe_site/
requirements.txt`, made once under artifacts/bench/ and reused while the pins are the same) with a
minimal project of its own (`bench/djstripe_site/`). Its webhook view verifies the signature, stores
the trigger, then processes the event inline: for `payment_intent.succeeded` it retrieves the
intent from Stripe and syncs it into its tables. Stripe is a stand-in on loopback that answers every
retrieve with Stripe's example object of that type (the intent as succeeded), counted per path.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.stack import WEB_WORKERS, BenchStack
from chaos.stack import free_port, spawn, wait_until
from stripe_emulator.strict import FIXTURES, stripe_object

SITE = Path(__file__).with_name("djstripe_site")
REQUIREMENTS = SITE / "requirements.txt"
VENV = Path("artifacts/bench/djstripe-venv")
# What dj-stripe stores an acknowledged event in (one row per Stripe event id).
EVENT_TABLE = "djstripe_event"
LABEL = "dj-stripe 2.11's webhook view (processes inline)"


def ensure_venv() -> Path:
    """The venv's python, installed from the pinned requirements unless it already is."""
    python = VENV / "bin" / "python"
    stamp = VENV / "requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print("==> installing dj-stripe into its own venv (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)  # noqa: S603
    subprocess.run(  # noqa: S603 - pip with the pinned file
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
        check=True,
    )
    stamp.write_text(wanted)
    return python


def _fixture_for(resource: str) -> str | None:
    """Stripe's object name for a URL's resource (payment_intents -> payment_intent)."""
    for name in (resource, resource.removesuffix("s"), resource.removesuffix("es")):
        if name in FIXTURES:
            return name
    return None


class RetrieveStandIn(ThreadingHTTPServer):
    """Stripe's retrieve endpoints (GET /v1/<resource>/<id>, GET /v1/account) on loopback."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), _Handler)
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, path: str) -> tuple[int, dict]:
        parts = path.strip("/").split("/")
        if parts == ["v1", "account"]:
            return 200, stripe_object("account")
        if len(parts) == 3 and parts[0] == "v1" and (name := _fixture_for(parts[1])):
            obj = stripe_object(name, id=parts[2])
            if name == "payment_intent":
                obj.update(status="succeeded", amount_received=obj["amount"], last_payment_error=None)
            return 200, obj
        error = {"type": "invalid_request_error", "code": "resource_missing", "message": f"No such {path}"}
        return 404, {"error": error}


class _Handler(BaseHTTPRequestHandler):
    server: RetrieveStandIn
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        with self.server.lock:
            self.server.calls[f"GET {'/'.join(path.split('/')[:3])}"] += 1
        status, body = self.server.answer(path)
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Request-Id", "req_bench")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


class DjStripe:
    """dj-stripe's site for one run: its database, the stand-in, gunicorn; `path` is its webhook URL."""

    def __init__(self, stack: BenchStack) -> None:
        self.stack = stack
        self.database = f"{stack.database}_djstripe"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.endpoint = uuid.uuid4()
        self.path = f"/stripe/webhook/{self.endpoint}/"
        self.stand_in = RetrieveStandIn()

    def _env(self) -> dict[str, str]:
        return {
            **{
                k: v
                for k, v in self.stack.env.items()
                if k in ("PATH", "HOME", "LANG", "TMPDIR", "SECRET_KEY")
            },
            "PYTHONPATH": str(SITE.parent.resolve()),
            "DJANGO_SETTINGS_MODULE": "djstripe_site.settings",
            "DJSTRIPE_DATABASE": self.database,
            "STRIPE_API_HOST": self.stand_in.url,
            "PYTHONUNBUFFERED": "1",
        }

    def _django(self, python: Path, *args: str) -> None:
        done = subprocess.run(  # noqa: S603 - Django's own command line, in the dj-stripe venv
            [str(python), "-m", "django", *args], env=self._env(), capture_output=True, text=True, check=False
        )
        if done.returncode:
            raise RuntimeError(f"dj-stripe site: django {args[0]} failed:\n{done.stderr[-3000:]}")

    def start(self) -> None:
        python = ensure_venv()
        threading.Thread(target=self.stand_in.serve_forever, name="djstripe-stand-in", daemon=True).start()
        self.stack._admin(f'CREATE DATABASE "{self.database}"')
        self._django(python, "migrate", "--noinput", "-v0")
        # The endpoint as dj-stripe keeps it: the signing secret, verify_signature, 300 s tolerance.
        self._django(
            python,
            "shell",
            "-c",
            "from djstripe.models import WebhookEndpoint; WebhookEndpoint.objects.create("
            f"id='we_bench', livemode=False, secret={self.stack.webhook_secret!r}, url={self.url!r},"
            f" enabled_events=['*'], status='enabled', api_version='2025-03-31.basil',"
            f" djstripe_uuid={str(self.endpoint)!r})",
        )
        self.stack.processes["djstripe"] = spawn(
            self.stack.run_dir / "djstripe.log",
            [
                str(python), "-m", "gunicorn", "djstripe_site.wsgi:application",
                "--bind", f"127.0.0.1:{self.port}", "--workers", str(WEB_WORKERS),
                "--timeout", "30", "--backlog", "2048",
            ],
            self._env(),
        )  # fmt: skip
        wait_until(self._answers, timeout=60, what="dj-stripe's gunicorn")

    def _answers(self) -> bool:
        import requests

        # No signature: dj-stripe answers 400 without touching anything.
        return requests.post(f"{self.url}{self.path}", timeout=2).status_code == 400

    def sql(self, statement: str) -> list[tuple]:
        from chaos.stack import run_sql

        return run_sql(f"{self.stack.postgres_url}/{self.database}", statement, None)

    def stop(self) -> None:
        self.stand_in.shutdown()
        self.stand_in.server_close()
        self.stack._admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
