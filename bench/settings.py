"""Settings for a benchmark run: the production settings, on loopback, with the reference views.

Every target is served by the same gunicorn with these settings (same middleware, logging and
database), so the only difference between two rows of the table is the view itself.
"""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"

# Plain HTTP on loopback.
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = False
SECURE_HSTS_SECONDS = 0

# The e2e benchmark times the applying of events; the emails they enqueue wait in a queue of their own.
CELERY_TASK_ROUTES = {
    "bookings.tasks.send_booking_email": {"queue": "bench-emails"},
    "bookings.tasks.send_booking_emails": {"queue": "bench-emails"},
}
EMAIL_BACKEND = "django.core.mail.backends.dummy.EmailBackend"
