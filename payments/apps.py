"""App configuration for payments."""

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
