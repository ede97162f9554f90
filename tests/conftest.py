"""Fixtures shared by the whole suite."""

import pytest
from django.db import connection


@pytest.fixture(autouse=True, scope="session")
def _postgres_only(django_db_setup, django_db_blocker):
    """Fail loudly rather than run the suite on anything but PostgreSQL."""
    with django_db_blocker.unblock():
        assert connection.vendor == "postgresql", "the tests must run on PostgreSQL"
