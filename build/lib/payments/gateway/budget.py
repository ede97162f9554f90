"""A time budget for the provider calls made while one web request waits: every call's timeout,
and whether another retry is started, fit inside it (Celery tasks run without one)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("payments_provider_deadline", default=None)


@contextmanager
def provider_budget(seconds: float | None) -> Iterator[None]:
    """Give the provider calls made inside the block `seconds` in all (None: no limit)."""
    token = _deadline.set(None if seconds is None else time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def budget_remaining() -> float | None:
    """Seconds left of the current budget, or None when there is none."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()
