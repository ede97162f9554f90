"""App configuration for credits."""

from django.apps import AppConfig


class CreditsConfig(AppConfig):
    name = "credits"
    verbose_name = "Credits"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from credits import receivers  # noqa: F401  (connects the payment signal receivers)
        from credits.exceptions import CreditsError
        from payments.api.errors import register_error

        register_error(CreditsError, 409)
