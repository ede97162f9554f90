"""Settings for the test suite: PostgreSQL always, the test-only payable app, fast hashing."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bookings")

from config.settings import *  # noqa: F403
from config.settings import DATABASES, INSTALLED_APPS

if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    # The suite's concurrency guarantees only mean something on PostgreSQL.
    raise RuntimeError("The tests run on PostgreSQL: set DATABASE_URL to a postgres:// URL.")

DEBUG = False
# The suite and its browser talk plain HTTP to the test servers.
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = False
SECURE_HSTS_SECONDS = 0
SECRET_KEY = "test-only-signing-key-that-is-long-enough-for-hs256"
INSTALLED_APPS = [*INSTALLED_APPS, "payments_tests.donations"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
DATABASES["default"]["CONN_MAX_AGE"] = 0

# Test keys for the emulator; the harness points API_BASE at it per test session.
PAYMENTS = {
    **PAYMENTS,  # noqa: F405
    "SECRET_KEY": "sk_test_suite",
    "PUBLISHABLE_KEY": "pk_test_suite",
    "WEBHOOK_SECRETS": ["whsec_test_primary", "whsec_test_secondary"],
    "RUN_TASKS_INLINE_WITHOUT_BROKER": False,
}

# A Redis database of the tests' own, emptied at the start of each run.
CELERY_BROKER_URL = os.environ.get("TEST_CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ.get("TEST_CACHE_URL", "redis://127.0.0.1:6379/14"),
    }
}
