"""A payment's timeline: what caused what happened to it, as services record it.

Entry points say why they act (`caused_by`): the API and the site's requests (the middleware),
a webhook event, reconciliation, a Celery task, staff in the admin. The gateway notes each call
it makes (`note_call`); the services record the Stripe calls that write at Stripe and every
status change of a payment or refund as PaymentEvent rows, a status change in the transaction
that makes it (a rolled-back change leaves no entry).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass


@dataclass(frozen=True)
class CallInfo:
    operation: str
    idempotency_key: str
    outcome: str  # "ok" or the error code
    request_id: str


# A cause, or what gives it when an entry is written (a request's user is known only once the
# view has authenticated it).
Cause = str | Callable[[], str]
_cause: ContextVar[Cause] = ContextVar("payments_cause", default="")
_last_call: ContextVar[CallInfo | None] = ContextVar("payments_last_call", default=None)


@contextmanager
def caused_by(cause: Cause) -> Iterator[None]:
    """What runs inside is recorded as caused by `cause` (the innermost cause wins)."""
    token = _cause.set(cause)
    try:
        yield
    finally:
        _cause.reset(token)


def set_cause(cause: Cause) -> Token[Cause]:
    """For entry points that cannot wrap their work (Celery's task signals): reset it after."""
    return _cause.set(cause)


def reset_cause(token: Token[Cause]) -> None:
    _cause.reset(token)


def current_cause() -> str:
    cause = _cause.get()
    if callable(cause):
        cause = cause()
    return (cause or "system")[:255]


def note_call(info: CallInfo) -> None:
    _last_call.set(info)


def take_call() -> CallInfo | None:
    """The gateway's last call in this context, once."""
    info = _last_call.get()
    _last_call.set(None)
    return info
