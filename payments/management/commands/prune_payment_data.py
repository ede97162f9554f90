"""Remove old webhook payloads and personal data from payment records (payments.retention)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_datetime

from payments.retention import payment_data_prune


class Command(BaseCommand):
    help = (
        "Replace webhook payloads older than WEBHOOK_PAYLOAD_RETENTION by a stub and clear card "
        "details and error text of payments older than PERSONAL_DATA_RETENTION; ids, amounts, "
        "statuses and times stay."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--before", help="prune both kinds of data older than this ISO 8601 time instead")
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would be pruned, change nothing"
        )

    def handle(self, *args: Any, before: str | None, dry_run: bool, **options: Any) -> None:
        moment = None
        if before:
            moment = parse_datetime(before)
            if moment is None or moment.tzinfo is None:
                raise CommandError(
                    f"--before {before!r} is not an ISO 8601 time with its zone, "
                    "such as 2026-01-31T12:00:00Z."
                )
        report = payment_data_prune(before=moment, dry_run=dry_run)
        verb = "would be pruned" if dry_run else "pruned"

        def since(moment: Any) -> str:
            return f"before {moment:%Y-%m-%d %H:%M}" if moment else "never (kept: retention is None)"

        self.stdout.write(
            f"Webhook payloads {verb}: {report.payloads} (received {since(report.payloads_before)})."
        )
        self.stdout.write(
            f"Payments whose card details and error text {verb}: {report.payments} "
            f"(made {since(report.personal_before)})."
        )
