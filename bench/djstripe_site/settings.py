"""dj-stripe as its documentation installs it: its app, its webhook URL, verify_signature, on the
run's PostgreSQL, with a typical Django middleware stack and the same database connection reuse as
the site. Stripe is the benchmark's stand-in on loopback (STRIPE_API_HOST, dj-stripe's own setting)."""

import os

SECRET_KEY = os.environ["SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "djstripe",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "djstripe_site.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["DJSTRIPE_DATABASE"],
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "USER": "postgres",
        "CONN_MAX_AGE": 60,
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}

STRIPE_LIVE_MODE = False
STRIPE_TEST_SECRET_KEY = "sk_test_" + "bench" * 8  # the shape dj-stripe checks
STRIPE_API_HOST = os.environ["STRIPE_API_HOST"]
DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
DJSTRIPE_USE_NATIVE_JSONFIELD = True
# dj-stripe warns that STRIPE_API_HOST is for development only: that is what this is.
SILENCED_SYSTEM_CHECKS = ["djstripe.W002"]
