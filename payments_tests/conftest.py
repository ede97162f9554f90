"""Fixtures of the payments app's own tests."""

import pytest
from django.db import connection

# The tests' own Celery app (eager, no broker), current for this run only.
from payments_tests.celery import app as celery_app
from payments_tests.fixtures import stripe_env, stripe_harness

__all__ = ["celery_app", "stripe_env", "stripe_harness"]


@pytest.fixture(autouse=True, scope="session")
def _postgres_only(django_db_setup, django_db_blocker):
    """The app's locking guarantees only mean something on PostgreSQL."""
    with django_db_blocker.unblock():
        assert connection.vendor == "postgresql", "the tests must run on PostgreSQL"
