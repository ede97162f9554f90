"""Django settings, read from the environment (and `.env`) with python-decouple."""

from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF
from decouple import Csv
from django.core.exceptions import ImproperlyConfigured

from config.env import env

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = env("SECRET_KEY", default="dev-insecure-change-me")
DEBUG = env("DEBUG", default=False, cast=bool)
ALLOWED_HOSTS = env("ALLOWED_HOSTS", default="localhost,127.0.0.1", cast=Csv())
CSRF_TRUSTED_ORIGINS = env("CSRF_TRUSTED_ORIGINS", default="", cast=Csv())
SITE_URL = env("SITE_URL", default="http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "payments",
    "bookings",
    "credits",
    "config.apps.SiteConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: answers a locked-out login (site, admin and API token).
    "axes.middleware.AxesMiddleware",
    # Stripe calls inside one request fit PAYMENTS["REQUEST_BUDGET"] (25 s; gunicorn's timeout: 30 s).
    "payments.middleware.ProviderBudgetMiddleware",
    "payments.middleware.PaymentCauseMiddleware",
]

ROOT_URLCONF = "config.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "bookings.context_processors.site",
            ],
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env("DATABASE_CONN_MAX_AGE", default=60, cast=int),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default (./scripts/run) serves bookers, the worker and webhooks at once:
    # every transaction takes the write lock when it begins (never a read lock it must upgrade,
    # which SQLite refuses at once with "database is locked"), waits up to `timeout` seconds for
    # it, and readers never wait for writers (WAL).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": env("SQLITE_BUSY_TIMEOUT", default=20, cast=int),
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
# A scraper's bearer token for /metrics (staff may read it with their session); empty: staff only.
METRICS_TOKEN = env("METRICS_TOKEN", default="")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
AUTHENTICATION_BACKENDS = [
    # django-axes first: it refuses a login from a locked-out address or account.
    "config.security.LoginLockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Failed logins (site, admin, API token) per address and per account, behind NUM_PROXIES proxies.
AXES_FAILURE_LIMIT = env("LOGIN_FAILURE_LIMIT", default=10, cast=int)
AXES_COOLOFF_TIME = timedelta(minutes=env("LOGIN_LOCKOUT_MINUTES", default=15, cast=int))
# An address guessing any accounts, or one account from one address; never an account alone
# (anyone could lock a victim out from many addresses: the per-account throttle slows that).
AXES_LOCKOUT_PARAMETERS = [["ip_address", "username"], "ip_address"]
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_CLIENT_IP_CALLABLE = "config.security.client_ip"
AXES_LOCKOUT_CALLABLE = "config.security.lockout_response"
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

# Email: Django's own setting names; console output unless SMTP is configured.
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", default="localhost")
EMAIL_PORT = env("EMAIL_PORT", default=25, cast=int)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env("EMAIL_USE_TLS", default=False, cast=bool)
EMAIL_USE_SSL = env("EMAIL_USE_SSL", default=False, cast=bool)
EMAIL_TIMEOUT = env("EMAIL_TIMEOUT", default=10, cast=int)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="bookings@localhost")

# Stripe: several webhook secrets may be given, comma-separated, while rotating.
STRIPE_SECRET_KEY = env("STRIPE_SECRET_KEY", default="")
STRIPE_PUBLISHABLE_KEY = env("STRIPE_PUBLISHABLE_KEY", default="")
STRIPE_WEBHOOK_SECRET = env("STRIPE_WEBHOOK_SECRET", default="", cast=Csv())
STRIPE_API_BASE = env("STRIPE_API_BASE", default="")
# Where the pages load Stripe.js from (the local stack points it at the emulator's stand-in).
STRIPE_JS_URL = env("STRIPE_JS_URL", default="https://js.stripe.com/v3/")


def _fixed_fees(text: str) -> dict[str, int]:
    """The fixed fee per currency in minor units: "usd:30,eur:25" -> {"usd": 30, "eur": 25}.

    "0" (what .env files held before fees were per currency) means none.
    """
    if text.strip() in ("", "0"):
        return {}
    pairs = (item.split(":", 1) for item in Csv()(text) if item)
    try:
        return {currency.strip().lower(): int(amount) for currency, amount in pairs}
    except ValueError as exc:
        raise ImproperlyConfigured(
            "PAYMENTS_FEE_FIXED takes currency:amount pairs, e.g. usd:30,eur:25"
        ) from exc


PAYMENTS = {
    "CURRENCY": env("PAYMENTS_CURRENCY", default="usd"),
    "FEE_RATE": env("PAYMENTS_FEE_RATE", default="0.03"),
    "FEE_FIXED": _fixed_fees(env("PAYMENTS_FEE_FIXED", default="")),
    "SECRET_KEY": STRIPE_SECRET_KEY,
    "PUBLISHABLE_KEY": STRIPE_PUBLISHABLE_KEY,
    "WEBHOOK_SECRETS": STRIPE_WEBHOOK_SECRET,
    "API_BASE": STRIPE_API_BASE,
    "SITE_URL": SITE_URL,
    # Longest delay before a retried task runs again; kept well below the visibility timeout.
    "MAX_RETRY_COUNTDOWN": env("CELERY_MAX_RETRY_COUNTDOWN", default=240, cast=int),
    # Without a reachable broker (development only), run tasks in-process after commit.
    "RUN_TASKS_INLINE_WITHOUT_BROKER": env("CELERY_RUN_INLINE_WITHOUT_BROKER", default=DEBUG, cast=bool),
    "THROTTLE_RATES": {
        "payments": env("THROTTLE_PAYMENTS", default="30/min"),
        "payment_status": env("THROTTLE_STATUS", default="120/min"),
    },
}

BOOKINGS = {
    "HOLD_MINUTES": env("BOOKING_HOLD_MINUTES", default=15, cast=int),
    "MAX_SEATS_PER_BOOKING": env("BOOKING_MAX_SEATS", default=10, cast=int),
    "MAX_OPEN_HOLDS": env("BOOKING_MAX_OPEN_HOLDS", default=3, cast=int),
    "MAX_HELD_SEATS": env("BOOKING_MAX_HELD_SEATS", default=20, cast=int),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {
            "()": "config.logging.KeyValueFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        # The SDK logs every request at INFO; our gateway logs each call with its outcome.
        "stripe": {"level": "WARNING"},
        # Django's own default adds a second, plain console line (in DEBUG) for every 4xx and
        # 5xx: replaced, so each request error is one line, through the root handler.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
    },
}

# HTTPS outside DEBUG unless told otherwise: secure cookies, redirects, HSTS.
SESSION_COOKIE_SECURE = env("SESSION_COOKIE_SECURE", default=not DEBUG, cast=bool)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env("SECURE_SSL_REDIRECT", default=not DEBUG, cast=bool)
# Load balancers probe the health endpoints over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^health/$", r"^api/webhooks/health/$"]
SECURE_HSTS_SECONDS = env("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000, cast=int)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False, cast=bool)
SECURE_HSTS_PRELOAD = env("SECURE_HSTS_PRELOAD", default=False, cast=bool)
# Behind a TLS-terminating proxy: the header it sets, e.g. "HTTP_X_FORWARDED_PROTO,https".
SECURE_PROXY_SSL_HEADER = tuple(env("SECURE_PROXY_SSL_HEADER", default="", cast=Csv())) or None
# A Content-Security-Policy on every page: scripts only from this site (inline ones with the
# request's nonce); the checkout page adds Stripe.js's origin (bookings.views).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, "'unsafe-inline'"],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "frame-src": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
        "base-uri": [SELF],
        "object-src": [NONE],
    }
}

# Celery: Redis broker, JSON only. Tasks are idempotent, so they are acknowledged late
# and requeued if a worker dies; every countdown stays below the visibility timeout.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=None)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env("CELERY_TASK_TIME_LIMIT", default=120, cast=int)
CELERY_TASK_SOFT_TIME_LIMIT = env("CELERY_TASK_SOFT_TIME_LIMIT", default=100, cast=int)
# A task a killed worker held comes back after this many seconds: minutes, not an hour. Every
# task's time limit and every retry countdown stay below it (tested).
CELERY_BROKER_VISIBILITY_TIMEOUT = env("CELERY_BROKER_VISIBILITY_TIMEOUT", default=300, cast=int)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_BROKER_VISIBILITY_TIMEOUT}
CELERY_BROKER_CONNECTION_TIMEOUT = 3
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.5}
# The longest retry delay and running tasks inline without a broker: PAYMENTS above.
# Run every task in the web process after commit (the local stack sets it when Redis is absent).
# What a task prints (the console email backend's emails in development) goes to stdout as it
# is, not line by line into WARNING log records.
CELERY_WORKER_REDIRECT_STDOUTS = False
CELERY_TASK_ALWAYS_EAGER = env("CELERY_TASK_ALWAYS_EAGER", default=False, cast=bool)
# Development without Redis: the web process runs the schedule below itself (config/inline_beat.py).
RUN_BEAT_IN_PROCESS = env("RUN_BEAT_IN_PROCESS", default=False, cast=bool)
CELERY_BEAT_SCHEDULE = {
    "expire-booking-holds": {"task": "bookings.tasks.expire_booking_holds", "schedule": 60.0},
    "expire-stale-payments": {"task": "payments.tasks.expire_stale_payments", "schedule": 600.0},
    "sweep-webhook-events": {"task": "payments.tasks.sweep_webhook_events", "schedule": 60.0},
    "sweep-pending-refunds": {"task": "payments.tasks.sweep_pending_refunds", "schedule": 60.0},
    "sweep-pending-emails": {"task": "bookings.tasks.sweep_pending_emails", "schedule": 60.0},
    "sweep-credits": {"task": "credits.tasks.sweep_credits", "schedule": 60.0},
    "reconcile-payments": {"task": "payments.tasks.reconcile_payments", "schedule": 3600.0},
    "prune-payment-data": {"task": "payments.tasks.prune_payment_data", "schedule": 86400.0},
}

CACHE_URL = env("CACHE_URL", default=REDIS_URL)
CACHES = {
    "default": (
        # "locmem://" for a single process without Redis (the local stack's fallback).
        {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
        if CACHE_URL.startswith("locmem")
        else {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            "TIMEOUT": 300,
            # A Redis that does not answer fails fast (throttles then let requests through).
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    )
}

# No API body comes near this; Stripe's events are well below it. Larger bodies answer 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "payments.api.schema.ErrorEnvelopeAutoSchema",
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "config.api.BoundedLimitOffsetPagination",
    # The API speaks JSON only (a form body is a 415): no form-encoded guesses about empty values.
    "DEFAULT_PARSER_CLASSES": ["config.api.BoundedJSONParser"],
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_RATES": {
        "auth": env("THROTTLE_AUTH", default="20/min"),
        "auth_account": env("THROTTLE_AUTH_ACCOUNT", default="10/min"),
        "token_refresh": env("THROTTLE_TOKEN_REFRESH", default="60/min"),
        "bookings": env("THROTTLE_BOOKINGS", default="10/min"),
    },
    # Trusted proxies in front of the site: 0 trusts no X-Forwarded-For (config.security.client_ip).
    "NUM_PROXIES": env("NUM_PROXIES", default=0, cast=int),
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env("JWT_ACCESS_MINUTES", default=10, cast=int)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env("JWT_REFRESH_DAYS", default=1, cast=int)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "ALGORITHM": "HS256",
    "UPDATE_LAST_LOGIN": True,
    # Tokens carry a digest of the password: a password change ends every access token at once,
    # and refresh tokens with it (config.security.RotateOnceRefreshSerializer).
    "CHECK_REVOKE_TOKEN": True,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Bookings and payments API",
    "DESCRIPTION": "Book seats at events and pay by card. Amounts are integers in minor units.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # Swagger UI and ReDoc from the installed sidecar package: the docs work offline, no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
