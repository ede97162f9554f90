"""Prometheus metrics of the payments app (the `metrics` extra: prometheus-client).

Without prometheus-client installed every metric is a no-op. Under several processes (gunicorn
workers, Celery) set PROMETHEUS_MULTIPROC_DIR to an empty directory before they start: each
process then writes its samples there and the exposition view adds them up. Labels never carry
an id or personal data: only operations, outcomes, event types, decline codes and finding kinds,
each checked against a short pattern (anything else is counted as "other").
"""

from __future__ import annotations

import re
from typing import Any

from django.db import transaction

try:
    from prometheus_client import Counter, Histogram
except ImportError:  # the extra is not installed: nothing is measured
    Counter = Histogram = None  # type: ignore[assignment,misc]

_LABEL = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
# Stripe's ids end in a long random tail (pi_3MtwBwLkdIwHu7ix28a3tqPa): never a label.
_ID_LIKE = re.compile(r"_[a-z0-9]{14,}")
# Seconds: from a fast acknowledgement to a Stripe call at its time budget.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class _Unmeasured:
    """What a metric is without prometheus-client."""

    def labels(self, *args: Any, **kwargs: Any) -> _Unmeasured:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


def _counter(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Any:
    return Counter(name, documentation, labels) if Counter is not None else _Unmeasured()


def _histogram(name: str, documentation: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Any:
    if Histogram is None:
        return _Unmeasured()
    return Histogram(name, documentation, labels, buckets=buckets)


def label(value: str | None) -> str:
    """A label value that cannot carry an id or personal data: a short code, else "other"."""
    if not value:
        return "none"
    value = value.lower()
    return value if _LABEL.match(value) and not _ID_LIKE.search(value) else "other"


PAYMENTS_STARTED = _counter("payments_started_total", "Payment attempts started.")
PAYMENTS_SUCCEEDED = _counter("payments_succeeded_total", "Payments that succeeded.")
PAYMENTS_FAILED = _counter(
    "payments_failed_total", "Payment attempts that failed, by decline code.", ("reason",)
)
REFUNDS = _counter("payments_refunds_total", "Refunds by outcome (succeeded, pending, failed).", ("outcome",))
STRIPE_REQUESTS = _counter(
    "payments_stripe_requests_total", "Stripe API calls by operation and outcome.", ("operation", "outcome")
)
STRIPE_DURATION = _histogram(
    "payments_stripe_request_duration_seconds",
    "Stripe API call time, retries included.",
    ("operation",),
    _BUCKETS,
)
STRIPE_RETRIES = _counter(
    "payments_stripe_retries_total", "Stripe requests tried again, by cause (429, 5xx, network).", ("cause",)
)
WEBHOOK_EVENTS = _counter(
    "payments_webhook_events_total",
    "Webhook events by type and outcome (received, duplicate, processed, ignored, failed).",
    ("type", "outcome"),
)
WEBHOOK_ACK_DURATION = _histogram(
    "payments_webhook_ack_duration_seconds", "Time to acknowledge a webhook delivery.", (), _BUCKETS
)
WEBHOOK_LAG = _histogram(
    "payments_webhook_lag_seconds", "From a webhook event's receipt to its processing.", (), _LAG_BUCKETS
)
TASK_RETRIES = _counter("payments_task_retries_total", "Celery task retries, by task.", ("task",))
RECONCILE_FINDINGS = _counter(
    "payments_reconcile_findings_total",
    "Reconciliation findings by kind and whether fixed.",
    ("kind", "fixed"),
)


def inc_on_commit(metric: Any, *, by: float = 1, **labels: str) -> None:
    """Count `by` once the current transaction commits (a rolled-back change counts nothing)."""
    target = metric.labels(**labels) if labels else metric
    transaction.on_commit(lambda: target.inc(by), robust=True)
