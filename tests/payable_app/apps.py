"""App configuration for the test-only payable app."""

from django.apps import AppConfig


class PayableAppConfig(AppConfig):
    name = "tests.payable_app"
    label = "payable_app"
    default_auto_field = "django.db.models.BigAutoField"
