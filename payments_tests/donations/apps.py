"""App configuration of the test payable: a donation."""

from django.apps import AppConfig


class DonationsConfig(AppConfig):
    name = "payments_tests.donations"
    label = "donations"
    default_auto_field = "django.db.models.BigAutoField"
