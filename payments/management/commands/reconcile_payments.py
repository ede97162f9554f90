"""Compare local payments and refunds with Stripe; fix what moved forward and report the rest."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_datetime

from payments.exceptions import ProviderError
from payments.models import Payment
from payments.reconcile import Report, payments_reconcile

ACTIONS = {True: "fixed", False: "needs attention"}


class Command(BaseCommand):
    help = "Reconcile local payments with Stripe (by default: what changed since the last run)."

    def add_arguments(self, parser: CommandParser) -> None:
        window = parser.add_mutually_exclusive_group()
        window.add_argument("--since", help="read Stripe from this ISO 8601 time")
        window.add_argument("--all", action="store_true", dest="everything", help="read everything")
        window.add_argument("--payment", type=int, help="check one local payment by id")
        parser.add_argument("--dry-run", action="store_true", help="report, change nothing")
        parser.add_argument("--json", action="store_true", dest="as_json", help="machine-readable report")

    def handle(
        self,
        *args: Any,
        since: str | None,
        everything: bool,
        payment: int | None,
        dry_run: bool,
        as_json: bool,
        **options: Any,
    ) -> None:
        moment = None
        if since:
            moment = parse_datetime(since)
            if moment is None:
                raise CommandError(f"--since {since!r} is not an ISO 8601 time such as 2026-01-31T12:00:00Z.")
        if payment is not None and not Payment.objects.filter(pk=payment).exists():
            raise CommandError(f"There is no payment {payment}.")
        progress = None if as_json else (lambda message: self.stderr.write(f"... {message}"))
        try:
            report = payments_reconcile(
                since=moment, everything=everything, payment_id=payment, dry_run=dry_run, progress=progress
            )
        except ProviderError as error:
            raise CommandError(
                f"Stripe could not be read ({error.code}): {error.message} Try again later."
            ) from None
        if as_json:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        else:
            self._table(report)
        if report.unresolved:
            sys.exit(1)

    def _table(self, report: Report) -> None:
        checked = (
            f"Checked {report.events_checked} events, {report.refunds_checked} refunds, "
            f"{report.intents_checked} payment intents"
            + (f" since {report.since:%Y-%m-%d %H:%M}" if report.since else "")
            + "."
        )
        self.stdout.write(checked)
        if report.other_installation:
            self.stdout.write(
                f"Skipped {report.other_installation} objects made by another installation on this "
                "Stripe account."
            )
        if not report.findings:
            self.stdout.write(self.style.SUCCESS("Nothing to fix: local records match Stripe."))
            return
        header = ("kind", "payment", "stripe id", "local", "stripe", "action")
        rows = [
            (
                f.kind,
                str(f.payment_id or "-"),
                f.stripe_id,
                f.local,
                f.stripe,
                "would fix" if report.dry_run and f.kind not in _UNFIXABLE else ACTIONS[f.fixed],
            )
            for f in report.findings
        ]
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            self.stdout.write("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)))
        summary = f"{len(report.fixed)} fixed, {len(report.unresolved)} need attention."
        self.stdout.write(self.style.WARNING(summary) if report.unresolved else self.style.SUCCESS(summary))


_UNFIXABLE = {
    "amount_mismatch",
    "no_local_payment",
    "unknown_at_stripe",
    "local_paid_not_at_stripe",
    "refund_mismatch",
}
