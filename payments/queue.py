"""Enqueues Celery tasks by name after the transaction commits, with an in-process fallback.

Callers name the task ("payments.tasks.retry_refund") rather than import it, so the services never
import the tasks that call them. Celery is the package's `celery` extra: this module imports it
only to send (payments.apps registers the tasks at start-up when it is installed).
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
from typing import Any, ClassVar

from django.db import transaction

from payments.conf import payments_settings

logger = logging.getLogger(__name__)


def enqueue(task: str | Any, *args: Any, countdown: float | None = None) -> None:
    """Send the task (its name, or a task object) with `args` once the current transaction
    commits (at once outside one).

    A rolled-back transaction sends nothing. If the broker cannot be reached the error is logged
    (the work is a row already, and the periodic sweeps pick it up again); in development, with
    PAYMENTS["RUN_TASKS_INLINE_WITHOUT_BROKER"], the task runs in this process instead.
    """
    name = task if isinstance(task, str) else task.name
    # robust: a failure to send is logged, never raised into whatever else runs on this commit.
    transaction.on_commit(lambda: _send(name, args, countdown), robust=True)


def nudge(name: str, *, interval: float) -> None:
    """Send the no-argument task `name` after the current transaction commits, at most once per
    `interval` seconds from this process, and never later than `interval` after this call.

    For a task that drains a table ("process what is pending"): a burst of commits costs one
    send per interval instead of one each, and a send always follows the burst's last commit, so
    nothing it wrote waits for a sweep. The send happens on a thread of its own, so the request
    never waits on the broker. (If the process dies before it sends, the periodic sweep is the
    safety net.) Eager Celery (tests) or `interval` 0: sent at once, in this thread.
    """
    transaction.on_commit(lambda: _nudge(name, interval), robust=True)


def _nudge(name: str, interval: float) -> None:
    try:
        from celery import current_app
    except ImportError:
        _send(name, ())  # logs that nothing can be sent
        return
    if current_app.conf.task_always_eager or interval <= 0:
        _send(name, ())
        return
    _Nudger.for_this_process().request(name, interval)


class _Nudger(threading.Thread):
    """One per process: sends each requested task once its interval since the last send is over."""

    _instance: ClassVar[_Nudger | None] = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        super().__init__(name="payments-nudger", daemon=True)
        self.pid = os.getpid()
        self.changed = threading.Condition()
        self.due: dict[str, float] = {}  # task name -> its interval
        self.last: dict[str, float] = {}  # task name -> when it was last sent (monotonic)

    @classmethod
    def for_this_process(cls) -> _Nudger:
        with cls._instance_lock:
            previous = cls._instance
            # A forked child inherits the object but not the thread: it starts its own. A thread
            # that died (it should not) is replaced, keeping what it still had to send.
            if previous is not None and previous.pid == os.getpid() and previous.is_alive():
                return previous
            nudger = cls()
            if previous is not None and previous.pid == os.getpid():
                nudger.due.update(previous.due)
            nudger.start()
            # A process that exits (a worker recycled, a deploy) sends what is still due.
            atexit.register(nudger.flush)
            cls._instance = nudger
            return nudger

    def flush(self) -> None:
        """Send at once whatever is still due (at exit)."""
        with self.changed:
            names, self.due = list(self.due), {}
        for name in names:
            _send(name, ())

    def request(self, name: str, interval: float) -> None:
        with self.changed:
            self.due[name] = interval
            self.changed.notify()

    def run(self) -> None:
        while True:
            with self.changed:
                while not self.due:
                    self.changed.wait()
                now = time.monotonic()
                ready = [n for n, every in self.due.items() if self.last.get(n, -every) + every <= now]
                if not ready:
                    self.changed.wait(min(self.last[n] + every - now for n, every in self.due.items()))
                    continue
                for name in ready:
                    del self.due[name]
                    self.last[name] = now
            for name in ready:
                try:
                    _send(name, ())
                except Exception:  # the thread must outlive any one send
                    logger.exception("could not enqueue task", extra={"task": name})


def _send(name: str, args: tuple, countdown: float | None = None) -> None:
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
        current_app.send_task(name, args=args, countdown=countdown)
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
