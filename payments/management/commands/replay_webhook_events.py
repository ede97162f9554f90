"""Re-run stored Stripe webhook events through the same processing as on delivery."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_datetime

from payments.exceptions import EventPruned
from payments.models import WebhookEvent
from payments.webhooks import webhook_events_replay


class Command(BaseCommand):
    help = "Replay stored webhook events (failed ones, by id, by type or since a time)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--failed", action="store_true", help="events whose processing failed")
        parser.add_argument("--ids", nargs="+", default=[], help="Stripe event ids (evt_...)")
        parser.add_argument("--type", dest="event_type", help="only events of this type")
        parser.add_argument("--since", help="only events received since (ISO 8601 time)")
        parser.add_argument("--dry-run", action="store_true", help="list the events, change nothing")

    def handle(
        self,
        *args: Any,
        failed: bool,
        ids: list[str],
        event_type: str | None,
        since: str | None,
        dry_run: bool,
        **options: Any,
    ) -> None:
        if not (failed or ids or event_type or since):
            raise CommandError("Say which events to replay: --failed, --ids, --type or --since.")
        events = WebhookEvent.objects.all()
        if failed:
            events = events.filter(status=WebhookEvent.Status.FAILED)
        if ids:
            events = events.filter(stripe_event_id__in=ids)
            missing = set(ids) - set(events.values_list("stripe_event_id", flat=True))
            if missing:
                raise CommandError(f"No stored event with id {', '.join(sorted(missing))}.")
        if event_type:
            events = events.filter(type=event_type)
        if since:
            moment = parse_datetime(since)
            if moment is None:
                raise CommandError(f"--since {since!r} is not an ISO 8601 time such as 2026-01-31T12:00:00Z.")
            events = events.filter(received_at__gte=moment)
        selected = list(events)
        if dry_run:
            for event in selected:
                self.stdout.write(f"{event.stripe_event_id}  {event.type}  {event.status}")
            self.stdout.write(f"{len(selected)} event(s) would be replayed.")
            return
        try:
            results = webhook_events_replay(events=selected)
        except EventPruned as error:
            raise CommandError(error.message) from None
        for event in results:
            line = f"{event.stripe_event_id}  {event.type}  {event.status}"
            self.stdout.write(self.style.ERROR(line) if event.status == "failed" else line)
        failures = sum(1 for e in results if e.status == WebhookEvent.Status.FAILED)
        self.stdout.write(f"{len(results)} replayed, {failures} failed.")
        if failures:
            raise CommandError(f"{failures} event(s) still fail; see their last_error in admin.")
