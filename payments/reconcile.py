"""Reconciliation with Stripe: read what changed there, fix what moved forward, report the rest.

Stripe is read in pages (list calls), never one retrieve per payment, in this order:
the Events API for what webhooks missed (stored and processed like a delivery), then
Refunds (refunds made in the dashboard are imported), then PaymentIntents (compared
with local rows: a payment behind Stripe is moved forward through the same services
as webhooks; amounts that differ are reported, never overwritten). Local successes
Stripe never showed are looked up one by one (they should be none) and reported.

Memory stays flat whatever the number of payments: pages are handled one at a time, and the ids
of the intents Stripe listed are kept in rows of their own under the run's id.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from django.db import models, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from payments import metrics, services, timeline
from payments.exceptions import ProviderError
from payments.gateway import get_gateway
from payments.gateway.base import IntentInfo, Page
from payments.models import Payment, ReconcileListedIntent, ReconcileState, Refund, WebhookEvent
from payments.states import PAID_STATUSES, REFUND_HOLDS_MONEY, PaymentStatus, can_transition
from payments.webhooks import webhook_event_process, webhook_event_store

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Read a little before the last run's start: Stripe objects created while it ran.
OVERLAP = timedelta(hours=1)
FIRST_RUN_WINDOW = timedelta(days=30)
_HELD = REFUND_HOLDS_MONEY


@dataclass
class Finding:
    """One difference between the local books and Stripe."""

    kind: str
    stripe_id: str
    payment_id: int | None = None
    local: str = ""
    stripe: str = ""
    fixed: bool = False


@dataclass
class Report:
    started_at: datetime
    since: datetime | None
    dry_run: bool
    events_checked: int = 0
    refunds_checked: int = 0
    intents_checked: int = 0
    # Objects another installation on the same Stripe account made: skipped, never applied.
    other_installation: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def fixed(self) -> list[Finding]:
        return [f for f in self.findings if f.fixed]

    @property
    def unresolved(self) -> list[Finding]:
        return [f for f in self.findings if not f.fixed]

    def as_dict(self) -> dict:
        return {
            "started_at": self.started_at.isoformat(),
            "since": self.since.isoformat() if self.since else None,
            "dry_run": self.dry_run,
            "checked": {
                "events": self.events_checked,
                "refunds": self.refunds_checked,
                "payment_intents": self.intents_checked,
            },
            "other_installation": self.other_installation,
            "fixed": len(self.fixed),
            "unresolved": len(self.unresolved),
            "findings": [asdict(f) for f in self.findings],
        }


def _pages(fetch: Callable[[str | None], Page[T]]) -> Iterator[list[T]]:
    cursor = None
    while True:
        page = fetch(cursor)
        yield page.items
        if not page.has_more or not page.next_cursor:
            return
        cursor = page.next_cursor


class _SeenIntents:
    """The ids of the intents Stripe listed in this run, kept in the database (one row each,
    under the run's id) so that a run over 100,000 payments holds no more in memory than one
    over 1,000. Rows, not a temporary table: a connection pooler may hand each statement to
    another server session."""

    STALE_AFTER = timedelta(days=1)

    def __init__(self) -> None:
        self.run = uuid.uuid4()

    def add(self, ids: list[str]) -> None:
        ReconcileListedIntent.objects.bulk_create(
            [ReconcileListedIntent(run=self.run, intent_id=intent_id) for intent_id in ids],
            ignore_conflicts=True,
        )

    def exclude_from(self, payments: models.QuerySet[Payment]) -> models.QuerySet[Payment]:
        listed = ReconcileListedIntent.objects.filter(
            run=self.run, intent_id=OuterRef("stripe_payment_intent_id")
        )
        return payments.exclude(Exists(listed))

    def close(self) -> None:
        """Forget this run's rows, and those a crashed run left."""
        stale = models.Q(created_at__lt=timezone.now() - self.STALE_AFTER)
        ReconcileListedIntent.objects.filter(models.Q(run=self.run) | stale).delete()


def _refunded_by_payment(payment_ids: Iterable[int]) -> dict[int, int]:
    rows = (
        Refund.objects.filter(payment_id__in=payment_ids, status__in=_HELD)
        .exclude(stripe_refund_id="")
        .values("payment_id")
        .annotate(total=models.Sum("amount"))
    )
    return {row["payment_id"]: row["total"] for row in rows}


class _Run:
    def __init__(
        self, *, since: datetime | None, dry_run: bool, progress: Callable[[str], None] | None
    ) -> None:
        self.gateway = get_gateway()
        self.report = Report(started_at=timezone.now(), since=since, dry_run=dry_run)
        self.since_ts = int(since.timestamp()) if since else None
        self.dry_run = dry_run
        self.progress = progress or (lambda message: None)
        self.seen_intents = _SeenIntents()

    def add(self, finding: Finding) -> None:
        self.report.findings.append(finding)
        if not self.dry_run:
            metrics.RECONCILE_FINDINGS.labels(
                kind=metrics.label(finding.kind), fixed=str(finding.fixed).lower()
            ).inc()
        log = logger.info if finding.fixed else logger.warning
        log("reconcile finding", extra=asdict(finding))

    # 1. Events webhooks missed ----------------------------------------------------------

    def events(self) -> None:
        for items in _pages(lambda c: self.gateway.list_events(created_gt=self.since_ts, cursor=c)):
            known = set(
                WebhookEvent.objects.filter(stripe_event_id__in=[e.id for e in items]).values_list(
                    "stripe_event_id", flat=True
                )
            )
            for event in items:
                self.report.events_checked += 1
                if event.id in known:
                    continue
                if services.is_foreign(event.object.get("metadata")):
                    self.report.other_installation += 1
                    continue
                fixed = False
                if not self.dry_run:
                    stored = webhook_event_store(event=event)
                    processed = (WebhookEvent.Status.PROCESSED, WebhookEvent.Status.IGNORED)
                    fixed = webhook_event_process(event_id=stored.pk).status in processed
                self.add(
                    Finding("missed_event", event.id, local="not received", stripe=event.type, fixed=fixed)
                )
            self.progress(f"{self.report.events_checked} events checked")

    # 2. Refunds made at Stripe -------------------------------------------------------------

    def refunds(self) -> None:
        for items in _pages(lambda c: self.gateway.list_refunds(created_gte=self.since_ts, cursor=c)):
            known = set(
                Refund.objects.filter(stripe_refund_id__in=[r.id for r in items]).values_list(
                    "stripe_refund_id", flat=True
                )
            )
            for info in items:
                self.report.refunds_checked += 1
                if info.id in known or info.status not in _HELD:
                    continue
                if services.is_foreign(info.metadata):
                    self.report.other_installation += 1
                    continue
                ours = (
                    Payment.objects.filter(
                        models.Q(stripe_payment_intent_id=info.intent_id)
                        | models.Q(stripe_charge_id=info.charge_id)
                    )
                    .exclude(stripe_payment_intent_id="", stripe_charge_id="")
                    .values_list("pk", flat=True)
                    .first()
                )
                if ours is None:
                    continue
                refund = None if self.dry_run else services.refund_sync(info=info)
                self.add(
                    Finding(
                        "refund_missing",
                        info.id,
                        ours,
                        "no refund",
                        f"{info.amount} {info.currency}",
                        fixed=refund is not None,
                    )
                )
            self.progress(f"{self.report.refunds_checked} refunds checked")

    # 3. PaymentIntents -------------------------------------------------------------------------

    def intents(self) -> None:
        for items in _pages(lambda c: self.gateway.list_intents(created_gte=self.since_ts, cursor=c)):
            local = {
                p.stripe_payment_intent_id: p
                for p in Payment.objects.filter(stripe_payment_intent_id__in=[i.id for i in items])
            }
            refunded = _refunded_by_payment([p.pk for p in local.values()])
            self.seen_intents.add([i.id for i in items])
            for intent in items:
                self.report.intents_checked += 1
                if intent.id not in local and services.is_foreign(intent.metadata):
                    self.report.other_installation += 1
                    continue
                self.compare(intent, local.get(intent.id), refunded)
            self.progress(f"{self.report.intents_checked} payment intents checked")

    def compare(self, intent: IntentInfo, payment: Payment | None, refunded: dict[int, int]) -> None:
        if payment is None:
            # Ours by this installation's mark, its id not stored yet (a crash right after creating it).
            claimed = services.payment_id_for(metadata=intent.metadata)
            payment = (
                Payment.objects.filter(pk=claimed, stripe_payment_intent_id="").first() if claimed else None
            )
            if payment is not None and not services.intent_may_pay(payment, intent):
                payment = None  # a card intent of an attempt its hosted page took (another tab)
            if payment is None:
                if intent.status == PaymentStatus.SUCCEEDED:
                    self.add(
                        Finding(
                            "no_local_payment",
                            intent.id,
                            None,
                            "none",
                            f"succeeded {intent.amount} {intent.currency}",
                        )
                    )
                return
        if (intent.amount, intent.currency) != (payment.total, payment.currency):
            self.add(
                Finding(
                    "amount_mismatch",
                    intent.id,
                    payment.pk,
                    f"{payment.total} {payment.currency}",
                    f"{intent.amount} {intent.currency}",
                )
            )
            return
        disputed = payment.status == PaymentStatus.DISPUTED  # the intent says nothing of a dispute
        if not disputed and intent.status != payment.status and can_transition(payment.status, intent.status):
            fixed = (
                not self.dry_run
                and services.payment_sync_intent(intent=intent, payment_id=payment.pk) is not None
            )
            # Money for a canceled attempt: the sync has refunded it; say so, not just "behind".
            kind = "paid_after_cancel" if payment.status == PaymentStatus.CANCELED else "status_behind"
            self.add(Finding(kind, intent.id, payment.pk, payment.status, intent.status, fixed=fixed))
        elif payment.status in PAID_STATUSES and intent.status != PaymentStatus.SUCCEEDED:
            self.add(
                Finding("local_paid_not_at_stripe", intent.id, payment.pk, payment.status, intent.status)
            )
        # Refunds were imported in the step before, so the page's totals are current.
        local_refunded = refunded.get(payment.pk, 0)
        if intent.amount_refunded is not None and intent.amount_refunded != local_refunded:
            self.add(
                Finding(
                    "refund_mismatch",
                    intent.id,
                    payment.pk,
                    f"refunded {local_refunded}",
                    f"refunded {intent.amount_refunded}",
                )
            )

    # 4. Local successes Stripe did not list ------------------------------------------------------

    def local_successes(self, since: datetime | None) -> None:
        paid = Payment.objects.filter(status__in=PAID_STATUSES).exclude(stripe_payment_intent_id="")
        if since is not None:
            paid = paid.filter(updated_at__gte=since)
        # Read at once (they should be none): a lookup below may write, which SQLite will not
        # start while a read is still open on this connection.
        for payment in list(self.seen_intents.exclude_from(paid)):
            try:
                intent = self.gateway.retrieve_intent(payment.stripe_payment_intent_id)
            except ProviderError as error:
                if error.code == "resource_missing":
                    self.add(
                        Finding(
                            "unknown_at_stripe",
                            payment.stripe_payment_intent_id,
                            payment.pk,
                            payment.status,
                            "missing",
                        )
                    )
                    continue
                raise
            self.compare(intent, payment, _refunded_by_payment([payment.pk]))


def payments_reconcile(
    *,
    since: datetime | None = None,
    everything: bool = False,
    payment_id: int | None = None,
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Compare local payments and refunds with Stripe; see the module's docstring.

    By default only what changed since the last run (a stored cursor) is read; `since`
    or `everything` choose the window; `payment_id` checks one payment.
    """
    state, _ = ReconcileState.objects.get_or_create(name="default")
    if payment_id is not None:
        payment = Payment.objects.get(pk=payment_id)
        run = _Run(since=None, dry_run=dry_run, progress=progress)
        if payment.stripe_payment_intent_id:
            intent = run.gateway.retrieve_intent(payment.stripe_payment_intent_id)
            run.report.intents_checked = 1
            with timeline.caused_by("reconcile"):
                run.compare(intent, payment, _refunded_by_payment([payment.pk]))
        return run.report
    if since is None and not everything:
        since = (
            (state.last_started_at - OVERLAP) if state.last_started_at else timezone.now() - FIRST_RUN_WINDOW
        )
    if everything:
        since = None
    run = _Run(since=since, dry_run=dry_run, progress=progress)
    try:
        with timeline.caused_by("reconcile"):
            run.events()
            run.refunds()
            run.intents()
            run.local_successes(since)
    finally:
        run.seen_intents.close()
    if not dry_run:
        with transaction.atomic():
            ReconcileState.objects.filter(pk=state.pk).update(
                last_started_at=run.report.started_at,
                last_finished_at=timezone.now(),
                last_unresolved=len(run.report.unresolved),
            )
    return run.report
