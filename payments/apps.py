"""App configuration for payments."""

from importlib.util import find_spec

from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"
    verbose_name = "Payments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from payments import (
            checks,  # noqa: F401  (registers the system checks)
            conf,
        )

        conf.connect_signals()
        if find_spec("celery") is not None:
            # Register the tasks in every process (web too), so a task sent by name can also run
            # in-process (eager mode, or no broker in development).
            from payments import tasks  # noqa: F401
