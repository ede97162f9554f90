"""Settings for a chaos run: the production settings with time compressed, so that a run which
kills workers and loses Redis's queue drains in minutes, not hours.

Every ordering the production values keep is kept here (docs/reliability.md):
Stripe timeout < request budget < gunicorn timeout; retry countdown + task time limit < sweep
delay < broker visibility timeout. Everything else is config.settings, read from the environment
that chaos/stack.py sets (DEBUG off, its own database, its own Redis, the emulator's keys).
"""

import os
from datetime import timedelta

from chaos.stack import REQUEST_BUDGET, STRIPE_TIMEOUT
from config.settings import *  # noqa: F403
from config.settings import BOOKINGS, CELERY_BEAT_SCHEDULE, PAYMENTS

# Plain HTTP on loopback.
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = False
SECURE_HSTS_SECONDS = 0

# Every email a file, so the run can count what really went out.
EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
EMAIL_FILE_PATH = os.environ.get("CHAOS_MAIL_DIR", "artifacts/chaos/mail")

PAYMENTS = {
    **PAYMENTS,
    "TIMEOUT": STRIPE_TIMEOUT,
    "REQUEST_BUDGET": REQUEST_BUDGET,
    "WEBHOOK_SWEEP_AFTER": timedelta(seconds=20),
    "REFUND_SWEEP_AFTER": timedelta(seconds=60),
    "MAX_RETRY_COUNTDOWN": 15,
    "RUN_TASKS_INLINE_WITHOUT_BROKER": False,
}
BOOKINGS = {
    **BOOKINGS,
    "EMAIL_RETRY_DELAY": 2.0,
    "EMAIL_SWEEP_AFTER": timedelta(seconds=60),
    "EMAIL_CLAIM_EXPIRES_AFTER": timedelta(seconds=50),
}

CELERY_TASK_TIME_LIMIT = 40
CELERY_TASK_SOFT_TIME_LIMIT = 30
CELERY_BROKER_VISIBILITY_TIMEOUT = 90
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_BROKER_VISIBILITY_TIMEOUT}
# Beat every 5 s instead of every minute; the run reconciles once, at its end, by command.
CELERY_BEAT_SCHEDULE = {
    name: {**entry, "schedule": 5.0}
    for name, entry in CELERY_BEAT_SCHEDULE.items()
    if name != "reconcile-payments"
}
