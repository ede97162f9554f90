"""pytest fixtures for projects that test with `payments`: the Stripe emulator, and the gateway
pointed at it. A project's conftest imports them (the booking site's does)."""

import pytest


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
