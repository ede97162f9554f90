"""Fixtures shared by the whole suite."""

import pytest
from django.db import connection

from payments_tests.fixtures import stripe_env, stripe_harness

__all__ = ["stripe_env", "stripe_harness"]


@pytest.fixture(autouse=True, scope="session")
def _postgres_only(django_db_setup, django_db_blocker):
    """Fail loudly rather than run the suite on anything but PostgreSQL."""
    with django_db_blocker.unblock():
        assert connection.vendor == "postgresql", "the tests must run on PostgreSQL"


@pytest.fixture(scope="session", autouse=True)
def _empty_test_broker():
    """Start each run with an empty broker when the Redis is the run's own (./scripts/test starts
    one and says so with TEST_REDIS_OWNED); a shared Redis is never emptied."""
    import os

    import redis
    from django.conf import settings

    if os.environ.get("TEST_REDIS_OWNED") == "1":
        redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()


@pytest.fixture
def deliver(client):
    """POST a Stripe event to the webhook endpoint, signed as Stripe would sign it."""
    import json

    from stripe_emulator.harness import sign_payload

    def post(event: dict, *, secret: str = "whsec_test_primary", timestamp=None, body: bytes | None = None):
        payload = body if body is not None else json.dumps(event).encode()
        signature = sign_payload(
            json.dumps(event).encode() if body is not None else payload, secret, timestamp
        )
        return client.post(
            "/api/webhooks/stripe/",
            data=payload,
            content_type="application/json",
            HTTP_STRIPE_SIGNATURE=signature,
        )

    return post


@pytest.fixture(scope="session")
def _celery_worker_for_the_run():
    """One real Celery worker (solo pool, in this process) for the whole run: Celery's test
    worker cannot be started a second time in one process."""
    from celery.contrib.testing.worker import start_worker

    from config.celery import app

    with start_worker(
        app, pool="solo", perform_ping_check=False, shutdown_timeout=10, loglevel="WARNING"
    ) as worker:
        app.control.cancel_consumer("celery", destination=[worker.hostname], reply=True)
        yield worker


@pytest.fixture
def celery_worker_thread(transactional_db, _celery_worker_for_the_run):
    """The run's worker, consuming the tests' Redis broker, with nothing left queued from before.

    Between the tests that ask for it the worker consumes nothing, so tasks other tests enqueue
    are never run against a database that is not theirs.
    """
    from config.celery import app

    worker = _celery_worker_for_the_run
    app.control.purge()  # tasks left by earlier tests name rows that no longer exist
    app.control.add_consumer("celery", destination=[worker.hostname], reply=True)
    yield worker
    app.control.cancel_consumer("celery", destination=[worker.hostname], reply=True)


def wait_for(condition, *, timeout: float = 15.0, interval: float = 0.1, message: str = "condition"):
    """Poll `condition` until it is truthy; fail with `message` after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {message}")


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Throttle counters live in the shared Redis cache: each test starts with none."""
    from django.core.cache import cache

    cache.clear()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures can tell a failed test."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def throttle_window():
    """The throttles count in fixed one-minute windows: start a test that counts to a limit well
    inside one, so that a window's end never resets its count halfway."""
    import time

    left = 60 - time.time() % 60
    if left < 5:
        time.sleep(left + 0.1)
