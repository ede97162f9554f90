"""Enqueues Celery tasks after the transaction commits, with an in-process fallback for development."""

from __future__ import annotations

import logging
import random

from django.conf import settings
from django.db import transaction
from kombu.exceptions import OperationalError

logger = logging.getLogger(__name__)


def enqueue(task, *args) -> None:
    """Send `task(*args)` once the current transaction commits (at once outside one).

    A rolled-back transaction sends nothing. If the broker cannot be reached the error
    is logged (the periodic sweeps pick the work up again); in development, with
    CELERY_RUN_INLINE_WITHOUT_BROKER, the task runs in this process instead.
    """
    transaction.on_commit(lambda: _send(task, args))


def _send(task, args) -> None:
    try:
        task.apply_async(args=args)
    except OperationalError:
        if getattr(settings, "CELERY_RUN_INLINE_WITHOUT_BROKER", False):
            logger.info("no broker: running task inline", extra={"task": task.name})
            task.apply(args=args)
            return
        logger.exception("could not enqueue task", extra={"task": task.name, "task_args": args})


def backoff(attempt: int, *, base: float = 5.0) -> float:
    """Seconds before retry number `attempt` (1-based): base × 2^(attempt-1), jittered to 50-100 %,
    capped at CELERY_MAX_RETRY_COUNTDOWN (which stays below the broker's visibility timeout)."""
    cap = float(getattr(settings, "CELERY_MAX_RETRY_COUNTDOWN", 900))
    delay = min(base * (2 ** (attempt - 1)), cap)
    return round(min(delay * (0.5 + random.random() / 2), cap), 3)  # noqa: S311 - jitter, not security
