"""Celery beat's schedule run by a thread of the web process: the development mode without Redis.

`./scripts/run` sets RUN_BEAT_IN_PROCESS when no Redis answers, so unpaid holds still expire (within
a minute of running out), stale payments are expired and the sweeps run, as beat would do them.
Each entry's task runs in this process (`Task.apply`), first shortly after start-up and then at its
interval; a task's retries run at once, as eager Celery runs them. One process only (runserver):
with several web processes every one would run the schedule, so a production start refuses it.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger(__name__)

_started = threading.Lock()
_thread: threading.Thread | None = None


def _seconds(schedule: Any) -> float | None:
    if isinstance(schedule, timedelta):
        return schedule.total_seconds()
    if isinstance(schedule, int | float):
        return float(schedule)
    return None  # a crontab: beat's business


def _entries() -> list[tuple[str, str, float]]:
    entries = []
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        seconds = _seconds(entry["schedule"])
        if seconds is None or seconds <= 0:
            logger.warning("schedule entry not run in process", extra={"entry": name})
            continue
        entries.append((name, entry["task"], seconds))
    return entries


def _run(name: str, task: str) -> None:
    try:
        result = current_app.tasks[task].apply()
        if result.failed():
            logger.warning("scheduled task failed", extra={"entry": name, "error": repr(result.result)})
    except Exception as error:  # one entry failing never stops the others
        logger.warning("scheduled task failed", extra={"entry": name, "error": repr(error)})
    finally:
        close_old_connections()


# The first runs wait this long after start-up (the server, and the emulator beside it, answer
# by then); then each entry runs at its interval.
FIRST_RUN_AFTER = 10.0


def run_forever(*, stop: threading.Event | None = None, first_run_after: float = FIRST_RUN_AFTER) -> None:
    """Run every due entry, then sleep until the next one is due (at most a second at a time)."""
    stop = stop or threading.Event()
    entries = _entries()
    if not entries:
        return
    due = dict.fromkeys((name for name, _, _ in entries), time.monotonic() + first_run_after)
    while not stop.is_set():
        try:
            now = time.monotonic()
            for name, task, seconds in entries:
                if now >= due[name]:
                    due[name] = now + seconds
                    _run(name, task)
        except Exception:  # the thread must outlive anything one round raises
            logger.exception("in-process schedule round failed")
        stop.wait(max(0.0, min(1.0, min(due.values()) - time.monotonic())))


def start() -> None:
    """Start the schedule's thread once per process."""
    global _thread
    with _started:
        if _thread is not None and _thread.is_alive():
            return
        _thread = threading.Thread(target=run_forever, name="inline-beat", daemon=True)
        _thread.start()
    logger.info("beat's schedule runs in this process (development without Redis)")
