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
    from tests.stripe_harness import StripeHarness

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
