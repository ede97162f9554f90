"""What a production process refuses to start without: checked by the WSGI/ASGI entry points,
the Celery app and `manage.py check --deploy`, so a forgotten secret never serves traffic."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured

# The development default in settings.py: public, so anyone could sign sessions and tokens with it.
INSECURE_SECRET_KEYS = frozenset({"dev-insecure-change-me", "change-me", ""})
MIN_SECRET_KEY_LENGTH = 50


def production_problems() -> list[str]:
    """What is missing for DEBUG=False, each as a sentence saying what to set (none in DEBUG)."""
    if settings.DEBUG:
        return []
    problems = []
    key = settings.SECRET_KEY or ""
    # As Django's own deploy check (security.W009): long, varied, not generated for development.
    weak = len(key) < MIN_SECRET_KEY_LENGTH or len(set(key)) < 5 or key.startswith("django-insecure-")
    if key in INSECURE_SECRET_KEYS or weak:
        problems.append(
            f"SECRET_KEY is missing, a published default, or not long ({MIN_SECRET_KEY_LENGTH}+) and varied "
            "characters: set SECRET_KEY (or SECRET_KEY_FILE) to a long random value, e.g. the output of "
            "python -c 'from django.core.management.utils import get_random_secret_key as k; print(k())'."
        )
    payments = getattr(settings, "PAYMENTS", {})
    if "replace_me" in str(payments.get("SECRET_KEY")) + str(payments.get("WEBHOOK_SECRETS")):
        problems.append("The Stripe keys are .env.example's placeholders: set the real ones.")
    if not payments.get("SECRET_KEY"):
        problems.append("STRIPE_SECRET_KEY is not set: set it to your sk_live_... (or sk_test_...) key.")
    if getattr(settings, "RUN_BEAT_IN_PROCESS", False):
        problems.append(
            "RUN_BEAT_IN_PROCESS is on: it is for development without Redis (every web process would "
            "run the schedule); unset it and run `celery -A config beat` once."
        )
    if not payments.get("WEBHOOK_SECRETS"):
        problems.append(
            "STRIPE_WEBHOOK_SECRET is not set: set it to the webhook endpoint's whsec_... secret."
        )
    return problems


def ensure_production_ready() -> None:
    """Raise ImproperlyConfigured, naming what to set, when DEBUG is off and a secret is missing
    or a system check fails (a WSGI server runs none of Django's checks itself)."""
    if settings.DEBUG:
        return
    from django.core.checks import run_checks

    problems = production_problems()
    problems += [f"{m.id}: {m.msg} {m.hint or ''}".strip() for m in run_checks() if m.is_serious()]
    if problems:
        raise ImproperlyConfigured("Refusing to start with DEBUG off: " + " ".join(problems))


@register("security", deploy=True)
def check_production_secrets(app_configs=None, **kwargs) -> list[Error]:
    return [Error(problem, id="config.E001") for problem in production_problems()]
