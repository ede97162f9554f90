"""Property-based run of schemathesis against the API's own schema, in-process and authenticated.

Every generated request must be answered without a 5xx, and the answer must conform to
the schema (status code, content type, body). Stripe calls go to the emulator. The
schemathesis pytest plugin is not used (its fixture handling tears down pytest-django's
database set-up); its Python API drives hypothesis inside an ordinary test instead.
"""

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, given, settings
from rest_framework_simplejwt.tokens import AccessToken
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.factories import BookingFactory, EventFactory

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

EXAMPLES_PER_OPERATION = 30


@pytest.fixture
def auth_headers(db, stripe_env, settings):
    """A user with an event and a booking; throttles out of the way for the run."""
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"auth": "100000/min"},
    }
    settings.PAYMENTS = {**settings.PAYMENTS, "THROTTLE_RATES": {"payments": None, "payment_status": None}}
    booking = BookingFactory(event=EventFactory(pk=1))
    BookingFactory(pk=2, event=booking.event, user=booking.user)
    return {"Authorization": f"Bearer {AccessToken.for_user(booking.user)}"}


@pytest.fixture
def wsgi_app():
    """The site's WSGI app, keeping the test's database connection open between requests.

    Django's test client does the same: request signals would otherwise close the
    connection that holds the test's transaction.
    """
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def test_api_conforms_to_its_schema(auth_headers, wsgi_app):
    schema = schemathesis.openapi.from_wsgi("/api/schema/", wsgi_app)
    failures: list[str] = []
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.startswith(("/api/schema/", "/api/docs/")):
            continue

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case):
            # Business rules (past event, unknown event, sold out) rightly refuse some
            # schema-valid bodies with 400/409, so "valid data is accepted" is not asked.
            case.call_and_validate(headers=auth_headers, excluded_checks=[positive_data_acceptance])

        try:
            check()
        except Exception as exc:
            failures.append(f"{operation.method.upper()} {operation.path}\n{exc}")
        checked += 1
    assert checked >= 20
    assert not failures, "\n\n".join(failures)
