"""Cancel payment attempts nobody finished (what the scheduled task runs)."""

from typing import Any

from django.core.management.base import BaseCommand

from payments.conf import payments_settings
from payments.services import payments_expire_stale


class Command(BaseCommand):
    help = "Cancel open payment attempts untouched for PAYMENTS['OPEN_PAYMENT_TTL']."

    def handle(self, *args: Any, **options: Any) -> None:
        outcome = payments_expire_stale(older_than=payments_settings.OPEN_PAYMENT_TTL)
        self.stdout.write(f"{outcome['canceled']} canceled, {outcome['skipped']} left for the next run.")
