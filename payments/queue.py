"""Enqueues Celery tasks by name after the transaction commits, with an in-process fallback.

Callers name the task ("payments.tasks.retry_refund") rather than import it, so the services never
import the tasks that call them. Celery is the package's `celery` extra: this module imports it
only to send (payments.apps registers the tasks at start-up when it is installed).
"""

from __future__ import annotations

import logging
import random
from typing import Any

from django.db import transaction

from payments.conf import payments_settings

logger = logging.getLogger(__name__)


def enqueue(task: str | Any, *args: Any) -> None:
    """Send the task (its name, or a task object) with `args` once the current transaction
    commits (at once outside one).

    A rolled-back transaction sends nothing. If the broker cannot be reached the error is logged
    (the work is a row already, and the periodic sweeps pick it up again); in development, with
    PAYMENTS["RUN_TASKS_INLINE_WITHOUT_BROKER"], the task runs in this process instead.
    """
    name = task if isinstance(task, str) else task.name
    # robust: a failure to send is logged, never raised into whatever else runs on this commit.
    transaction.on_commit(lambda: _send(name, args), robust=True)


def _send(name: str, args: tuple) -> None:
    try:
        from celery import current_app
        from kombu.exceptions import OperationalError
    except ImportError:
        logger.error("celery is not installed: task not sent", extra={"task": name, "task_args": args})
        return
    if current_app.conf.task_always_eager:
        current_app.tasks[name].apply(args=args)
        return
    try:
        current_app.send_task(name, args=args)
    except OperationalError:
        if payments_settings.RUN_TASKS_INLINE_WITHOUT_BROKER:
            logger.info("no broker: running task inline", extra={"task": name})
            current_app.tasks[name].apply(args=args)
            return
        logger.exception("could not enqueue task", extra={"task": name, "task_args": args})


def backoff(attempt: int, *, base: float = 5.0) -> float:
    """Seconds before retry number `attempt` (1-based): base × 2^(attempt-1), jittered to 50-100 %,
    capped at PAYMENTS["MAX_RETRY_COUNTDOWN"] (which stays below the broker's visibility timeout)."""
    cap = float(payments_settings.MAX_RETRY_COUNTDOWN)
    delay = min(base * (2 ** (attempt - 1)), cap)
    return round(min(delay * (0.5 + random.random() / 2), cap), 3)  # noqa: S311 - jitter, not security
