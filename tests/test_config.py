"""Configuration helpers: secrets from files, structured log lines."""

import logging

from config.env import env
from config.logging import KeyValueFormatter


def test_a_secret_can_come_from_a_file(tmp_path, monkeypatch):
    secret = tmp_path / "stripe_key"
    secret.write_text("sk_test_from_a_file\n")
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_from_the_environment")
    assert env("STRIPE_SECRET_KEY", default="") == "sk_test_from_the_environment"
    monkeypatch.setenv("STRIPE_SECRET_KEY_FILE", str(secret))
    assert env("STRIPE_SECRET_KEY", default="") == "sk_test_from_a_file"


def test_a_file_value_is_cast_like_the_variable(tmp_path, monkeypatch):
    from decouple import Csv

    secrets = tmp_path / "webhook_secrets"
    secrets.write_text("whsec_new,whsec_old")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET_FILE", str(secrets))
    assert env("STRIPE_WEBHOOK_SECRET", default="", cast=Csv()) == ["whsec_new", "whsec_old"]


def test_log_lines_carry_their_structured_fields():
    formatter = KeyValueFormatter("%(levelname)s %(name)s %(message)s")
    record = logging.makeLogRecord(
        {
            "levelname": "INFO",
            "name": "payments.services",
            "msg": "payment status changed",
            "payment_id": 42,
            "status": "succeeded",
            "payable": "bookings.booking:7",
        }
    )
    assert formatter.format(record) == (
        "INFO payments.services payment status changed "
        "payment_id=42 status=succeeded payable=bookings.booking:7"
    )


def test_a_server_log_line_leaves_out_the_socket():
    formatter = KeyValueFormatter("%(levelname)s %(name)s %(message)s")
    record = logging.makeLogRecord(
        {
            "levelname": "INFO",
            "name": "django.server",
            "msg": '"GET / HTTP/1.1" 200 512',
            "request": object(),
            "server_time": "01/Dec/2026 10:00:00",
            "status_code": 200,
        }
    )
    assert formatter.format(record) == 'INFO django.server "GET / HTTP/1.1" 200 512 status_code=200'


def _start(module: str, **env_overrides):
    """Import a production entry point in a fresh process with only these settings."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECRET_KEY", "STRIPE_", "DEBUG"))}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", **env_overrides)
    return subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


STRIPE_KEYS = {"STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_WEBHOOK_SECRET": "whsec_x"}
GOOD_KEY = "s9#Kq2!vLm7@Xw4$Rt8^Bz1&Hn6*Pd3(Jc5)Fy0_Ge-Ua+Ti=Oe"


def test_production_refuses_to_start_with_the_public_default_key():
    for module in ("config.wsgi", "config.asgi"):
        started = _start(module, DEBUG="False", **STRIPE_KEYS)
        assert started.returncode != 0 and "Refusing to start with DEBUG off" in started.stderr
        assert "set SECRET_KEY" in started.stderr
    for weak in ("short", "k" * 60):
        refused = _start("config.wsgi", DEBUG="False", SECRET_KEY=weak, **STRIPE_KEYS)
        assert refused.returncode != 0 and "SECRET_KEY" in refused.stderr
    placeholders = {"STRIPE_SECRET_KEY": "sk_test_replace_me", "STRIPE_WEBHOOK_SECRET": "whsec_replace_me"}
    assert _start("config.wsgi", DEBUG="False", SECRET_KEY=GOOD_KEY, **placeholders).returncode != 0
    no_stripe = _start("config.wsgi", DEBUG="False", SECRET_KEY=GOOD_KEY)
    assert no_stripe.returncode != 0 and "STRIPE_SECRET_KEY" in no_stripe.stderr


def test_production_starts_with_its_secrets_and_development_without():
    assert _start("config.wsgi", DEBUG="False", SECRET_KEY=GOOD_KEY, **STRIPE_KEYS).returncode == 0
    assert _start("config.wsgi", DEBUG="True").returncode == 0


def test_production_refuses_the_development_schedule_in_process():
    started = _start(
        "config.wsgi", DEBUG="False", SECRET_KEY=GOOD_KEY, RUN_BEAT_IN_PROCESS="True", **STRIPE_KEYS
    )
    assert started.returncode != 0 and "RUN_BEAT_IN_PROCESS" in started.stderr


def test_the_in_process_schedule_runs_each_entry_at_its_interval(settings):
    import threading

    from celery import current_app

    from config import inline_beat

    ran: list[str] = []
    for entry in ("often", "rarely", "failing"):

        def probe(entry=entry) -> None:
            ran.append(entry)
            if entry == "failing":
                raise RuntimeError("a task that fails")

        current_app.task(name=f"tests.beat_{entry}")(probe)
    settings.CELERY_BEAT_SCHEDULE = {
        "often": {"task": "tests.beat_often", "schedule": 0.05},
        "rarely": {"task": "tests.beat_rarely", "schedule": 3600.0},
        "failing": {"task": "tests.beat_failing", "schedule": 0.05},  # never stops the others
        "crontab": {"task": "tests.beat_often", "schedule": object()},  # beat's business, skipped
    }
    stop = threading.Event()
    thread = threading.Thread(target=inline_beat.run_forever, kwargs={"stop": stop, "first_run_after": 0})
    thread.start()
    threading.Event().wait(0.5)
    stop.set()
    thread.join(5)
    assert ran.count("rarely") == 1 and ran.count("often") >= 2 and ran.count("failing") >= 2


def test_production_refuses_a_payments_setting_that_fails_its_checks():
    started = _start(
        "config.wsgi", DEBUG="False", SECRET_KEY=GOOD_KEY, PAYMENTS_FEE_FIXED="usd", **STRIPE_KEYS
    )
    assert started.returncode != 0 and "PAYMENTS_FEE_FIXED" in started.stderr
    old_env = _start("config.wsgi", DEBUG="False", SECRET_KEY=GOOD_KEY, PAYMENTS_FEE_FIXED="0", **STRIPE_KEYS)
    assert old_env.returncode == 0, old_env.stderr


def test_the_worker_refuses_to_start_too(settings):
    import pytest

    from config.celery import _refuse_insecure_production

    settings.DEBUG = False
    settings.SECRET_KEY = "dev-insecure-change-me"
    with pytest.raises(SystemExit):  # Celery swallows other exceptions from worker_init
        _refuse_insecure_production()
