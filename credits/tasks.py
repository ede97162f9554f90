"""Celery tasks of the credits app: its emails and the sweep of what a receiver missed."""

from __future__ import annotations

from celery import shared_task

from payments.queue import backoff


@shared_task(bind=True, acks_late=True, max_retries=None)
def send_credit_email(self, purchase_id: int, kind: str) -> str:
    """Send one credit email once; SMTP failures retry with growing, jittered delays."""
    from config.outbox import EmailNotSent
    from credits import emails

    try:
        return emails.OUTBOX.send(purchase_id, kind).status
    except EmailNotSent as exc:
        attempt = exc.attempts or self.request.retries + 1  # the row's count, whoever tried it
        if attempt >= emails.OUTBOX.max_attempts():
            emails.OUTBOX.give_up(purchase_id, kind, error=str(exc))
            return "failed"
        raise self.retry(countdown=backoff(attempt, base=emails.EMAIL_RETRY_DELAY)) from None


@shared_task(acks_late=True)
def sweep_credits() -> dict:
    """Credits a failed signal receiver did not add or take back, and credit emails whose task
    was lost (scheduled by beat every minute)."""
    from credits import emails, services

    outcome = services.credits_sweep()
    outcome["emails"] = emails.OUTBOX.sweep(older_than=emails.EMAIL_SWEEP_AFTER)
    return outcome
