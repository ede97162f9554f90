"""Fixtures shared by the whole suite."""

import pytest
from django.db import connection


@pytest.fixture(autouse=True, scope="session")
def _postgres_only(django_db_setup, django_db_blocker):
    """Fail loudly rather than run the suite on anything but PostgreSQL."""
    with django_db_blocker.unblock():
        assert connection.vendor == "postgresql", "the tests must run on PostgreSQL"


@pytest.fixture(scope="session")
def stripe_harness():
    """localstripe and its proxy, started once per test run."""
    from stripe_emulator.harness import StripeHarness

    return StripeHarness().start()


@pytest.fixture
def stripe_env(stripe_harness, settings):
    """Point the payments gateway at the harness, with fast retries and a short timeout."""
    stripe_harness.reset()
    settings.PAYMENTS = {
        **settings.PAYMENTS,
        "API_BASE": stripe_harness.url,
        "RETRY_DELAY": 0.01,
        "RETRY_MAX_DELAY": 0.05,
        "TIMEOUT": 2.0,
    }
    yield stripe_harness
    stripe_harness.reset()


@pytest.fixture(scope="session", autouse=True)
def _empty_test_broker():
    """Start each run with the tests' own Redis database empty (a real connection)."""
    import redis
    from django.conf import settings

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
