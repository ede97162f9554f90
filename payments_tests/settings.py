"""A minimal project around `payments` for its own tests: Django's admin, REST framework, the
donation app and PostgreSQL (a database of these tests' own). Nothing of the booking site."""

import os
from importlib.util import find_spec

SECRET_KEY = "payments-tests-only-signing-key-that-is-long-enough"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
ROOT_URLCONF = "payments_tests.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "payments",
    "payments_tests.donations",
]
# With the `api` extra installed, the REST endpoints too.
API = find_spec("rest_framework") is not None
if API:
    INSTALLED_APPS.append("rest_framework")
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "payments.middleware.ProviderBudgetMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PAYMENTS_TESTS_DB", "payments_tests"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
    }
}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "EXCEPTION_HANDLER": "payments.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "payments.api.schema.ErrorEnvelopeAutoSchema",
}

# The emulator's keys; the fixtures point API_BASE at it.
PAYMENTS = {
    "SECRET_KEY": "sk_test_payments",
    "PUBLISHABLE_KEY": "pk_test_payments",
    "WEBHOOK_SECRETS": ["whsec_payments_tests"],
    "SITE_URL": "http://testserver",
}
