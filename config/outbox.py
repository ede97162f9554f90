"""Emails sent once each through Celery, from a log row written in the same transaction as the
change that needs them (an outbox): the machinery both products of the site use.

Sending is in two steps: the log row is claimed (`sending`) and committed, the message is sent,
then the row is marked `sent`. A task delivered twice finds the claim and sends nothing. A send
that fails with an SMTP or network error is known not to have gone out, so the row goes back to
`pending` and the task retries it. A claim whose worker died (killed between the claim and the
SMTP server's answer) expires after `claim_expires_after`, longer than any send may take, and the
sweep sends it again: an email is never lost. Should the worker have died after the server took
the message, the second copy carries the same Message-ID, which mail systems fold.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core.mail import EmailMultiAlternatives
from django.db import models, transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.utils import timezone
from prometheus_client import Counter

from payments.queue import enqueue

EMAILS = Counter("site_emails_total", "Emails by outcome (sent, retry, failed).", ("outcome",))

logger = logging.getLogger(__name__)

# Emails per batch task: a drained batch of confirmations costs a few publishes, not one per email,
# and a pool of workers still shares them out.
BATCH_EMAILS = 10

# Failures that mean "the message did not go out": safe to try again.
TRANSIENT_ERRORS = (smtplib.SMTPException, OSError)


class EmailNotSent(Exception):
    """The SMTP server could not be reached or refused the message; retrying may help.
    `attempts`: how many times the email has been tried, this one included (its row's count,
    whichever task tried it)."""

    def __init__(self, message: str, *, attempts: int = 0) -> None:
        super().__init__(message)
        self.attempts = attempts


@dataclass(frozen=True)
class Email:
    recipient: str
    subject: str
    template: str  # the name of a .txt and an .html template, without the extension
    context: dict


class OutboxEmail(models.Model):
    """One email about one object, sent at most once per kind (a concrete log adds the foreign
    key to the object and a unique constraint on it and `kind`)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    kind = models.CharField(max_length=64, help_text="What the email is about, e.g. confirmed or refund:12.")
    recipient = models.EmailField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


@dataclass(frozen=True)
class Outbox:
    """The emails of one kind of object: its log model, how to load the object and compose each
    kind of email, and the Celery task (object id, kind) that calls `send`."""

    log: type[OutboxEmail]
    owner: str  # the log's foreign key to the object, e.g. "booking"
    task: str  # the sending task's name
    load: Callable[[Any], Any]  # the object by primary key, with what compose reads
    compose: Callable[[Any, str], Email]
    recipient_of: Callable[[Any, str], str]
    message_id: Callable[[Any, str], str]  # (object id, kind) -> a stable Message-ID
    # The task (a list of [object id, kind]) that sends several emails recorded together, if any.
    batch_task: str = ""
    claim_expires_after: Callable[[], timedelta] = lambda: timedelta(minutes=5)
    max_attempts: Callable[[], int] = lambda: 5

    def _rows(self, owner_id: Any, kind: str) -> models.QuerySet:
        return self.log._default_manager.filter(**{f"{self.owner}_id": owner_id, "kind": kind})

    def _extra(self, owner_id: Any, kind: str, **fields: Any) -> dict[str, Any]:
        return {f"{self.owner}_id": owner_id, "kind": kind, **fields}

    def queue(self, obj: Any, kind: str) -> None:
        """Record that the object's email of `kind` must go out (a pending row, in the caller's
        transaction) and enqueue its sending once that commits. The row is what counts: should the
        enqueue be lost (Redis down, a crash), the sweep sends what is still pending."""
        recipient = self.recipient_of(obj, kind)
        status = OutboxEmail.Status.PENDING if recipient else OutboxEmail.Status.FAILED
        log, _created = self.log._default_manager.get_or_create(
            **{self.owner: obj, "kind": kind}, defaults={"recipient": recipient or "", "status": status}
        )
        if log.status == OutboxEmail.Status.PENDING:
            enqueue(self.task, obj.pk, kind)

    def queue_many(self, items: list[tuple[Any, str]]) -> None:
        """`queue` for many (object, kind) at once: one INSERT for their rows (a row already there
        is kept), then their sending enqueued once that commits, BATCH_EMAILS per task when the
        outbox has a batch task (a task for a row already sent finds it sent and sends nothing)."""
        recipients = [(obj, kind, self.recipient_of(obj, kind)) for obj, kind in items]
        self.log._default_manager.bulk_create(
            [
                self.log(
                    **{self.owner: obj, "kind": kind},
                    recipient=recipient or "",
                    status=OutboxEmail.Status.PENDING if recipient else OutboxEmail.Status.FAILED,
                )
                for obj, kind, recipient in recipients
            ],
            ignore_conflicts=True,
        )
        # As `queue`: only rows pending now (one already there keeps its state: sent, given up).
        pending = set(
            self.log._default_manager.filter(
                **{f"{self.owner}__in": [obj for obj, _kind, _r in recipients]},
                kind__in={kind for _obj, kind, _r in recipients},
                status=OutboxEmail.Status.PENDING,
            ).values_list(f"{self.owner}_id", "kind")
        )
        due = [[obj.pk, kind] for obj, kind, _recipient in recipients if (obj.pk, kind) in pending]
        if not self.batch_task:
            for owner_id, kind in due:
                enqueue(self.task, owner_id, kind)
            return
        for start in range(0, len(due), BATCH_EMAILS):
            enqueue(self.batch_task, due[start : start + BATCH_EMAILS])

    def send_many(self, items: list[list[Any]], *, retry: Callable[[Any, str], None]) -> int:
        """Send each (object id, kind) of a batch task once; one that fails goes to `retry` (its
        own task, with backoff) and the others go on. Returns how many were sent."""
        sent = 0
        for owner_id, kind in items:
            try:
                sent += self.send(owner_id, kind).status == OutboxEmail.Status.SENT
            except EmailNotSent as exc:
                if exc.attempts >= self.max_attempts():
                    self.give_up(owner_id, kind, error=str(exc))
                else:
                    retry(owner_id, kind)
            except Exception:
                # Left pending (or claimed): the sweep sends it again.
                logger.exception("email not sent", extra=self._extra(owner_id, kind))
        return sent

    def sweep(self, *, older_than: timedelta) -> int:
        """Enqueue again the emails still pending after `older_than` (their task was lost) and those
        whose claim expired (their worker died while sending); returns how many. A task delivered
        twice sends once: a row is claimed before its email goes out."""
        now = timezone.now()
        lost = Q(status=OutboxEmail.Status.PENDING, updated_at__lt=now - older_than)
        abandoned = Q(status=OutboxEmail.Status.SENDING, updated_at__lt=now - self.claim_expires_after())
        stale = self.log._default_manager.filter(
            lost | abandoned, attempts__lt=self.max_attempts()
        ).values_list(f"{self.owner}_id", "kind")[:500]
        for owner_id, kind in stale:
            enqueue(self.task, owner_id, kind)
        return len(stale)

    def _claim(self, owner_id: Any, kind: str, recipient: str) -> OutboxEmail | None:
        """Mark the log row `sending` (creating it), or None when it was sent or is being sent (a
        claim younger than claim_expires_after)."""
        with transaction.atomic():
            log, _ = self.log._default_manager.get_or_create(
                **{f"{self.owner}_id": owner_id, "kind": kind}, defaults={"recipient": recipient}
            )
            log = self.log._default_manager.select_for_update().get(pk=log.pk)
            expired = log.updated_at < timezone.now() - self.claim_expires_after()
            given_up = log.status == OutboxEmail.Status.FAILED and log.attempts >= self.max_attempts()
            if (
                log.status == OutboxEmail.Status.SENT
                or (log.status == OutboxEmail.Status.SENDING and not expired)
                or given_up  # a retry still queued when another task gave up: no more tries
            ):
                return None
            log.status = OutboxEmail.Status.SENDING
            log.attempts += 1
            log.recipient = recipient
            log.save()
            return log

    def send(self, owner_id: Any, kind: str) -> OutboxEmail:
        """Send the object's email of `kind` once; raises EmailNotSent when a retry may help."""
        email = self.compose(self.load(owner_id), kind)
        if not email.recipient:
            logger.warning("no address for email", extra=self._extra(owner_id, kind))
            unsent, _ = self.log._default_manager.get_or_create(
                **{f"{self.owner}_id": owner_id, "kind": kind}, defaults={"status": OutboxEmail.Status.FAILED}
            )
            return unsent
        log = self._claim(owner_id, kind, email.recipient)
        if log is None:
            return self._rows(owner_id, kind).get()
        message = EmailMultiAlternatives(
            subject=email.subject,
            body=render_to_string(f"{email.template}.txt", email.context),
            to=[email.recipient],
            # A stable Message-ID lets mail systems fold a duplicate, should one ever get out.
            headers={"Message-ID": self.message_id(owner_id, kind)},
        )
        message.attach_alternative(render_to_string(f"{email.template}.html", email.context), "text/html")
        try:
            message.send()
        except TRANSIENT_ERRORS as exc:
            self.log._default_manager.filter(pk=log.pk).update(
                status=OutboxEmail.Status.PENDING,
                last_error=f"{type(exc).__name__}: {exc}"[:2000],
                updated_at=timezone.now(),
            )
            logger.warning("email not sent", extra=self._extra(owner_id, kind, attempts=log.attempts))
            EMAILS.labels(outcome="retry").inc()
            raise EmailNotSent(f"{type(exc).__name__}: {exc}", attempts=log.attempts) from exc
        self.log._default_manager.filter(pk=log.pk).update(
            status=OutboxEmail.Status.SENT, sent_at=timezone.now(), last_error="", updated_at=timezone.now()
        )
        logger.info("email sent", extra=self._extra(owner_id, kind))
        EMAILS.labels(outcome="sent").inc()
        return self.log._default_manager.get(pk=log.pk)

    def give_up(self, owner_id: Any, kind: str, *, error: str) -> None:
        """After the last attempt: keep the row as failed for staff to see."""
        self._rows(owner_id, kind).update(
            status=OutboxEmail.Status.FAILED, last_error=error[:2000], updated_at=timezone.now()
        )
        logger.error("email failed for good", extra=self._extra(owner_id, kind))
        EMAILS.labels(outcome="failed").inc()
