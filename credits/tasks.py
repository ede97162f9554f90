"""Celery tasks of the credits app."""

from __future__ import annotations

from celery import shared_task


@shared_task(acks_late=True)
def sweep_credits() -> dict:
    """Credits a failed signal receiver did not add or take back (scheduled by beat every minute)."""
    from credits import services

    return services.credits_sweep()
