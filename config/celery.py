"""The Celery app: settings from Django's CELERY_* names, tasks discovered in installed apps."""

import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _refuse_insecure_production(**kwargs) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from config.production import ensure_production_ready

    try:
        ensure_production_ready()
    except ImproperlyConfigured as error:
        # Celery logs and swallows a receiver's exception; SystemExit stops the worker.
        raise SystemExit(str(error)) from None
