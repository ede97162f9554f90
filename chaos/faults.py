"""Random faults at the Stripe proxy: the errors Stripe documents, resets and stalls, and outages."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

from stripe_emulator.harness import Fault


def _error(kind: str, message: str, code: str | None = None) -> dict:
    error = {"type": kind, "message": message}
    if code:
        error["code"] = code
    return {"error": error}


# (weight, name, how to build the fault). Answers without forwarding never reached Stripe's
# logic; a reset or a stall happens after Stripe acted, so only the idempotency key saves a retry.
KINDS = [
    (25, "500", lambda m, p, stall: Fault(m, p, "respond", 500, body=_error("api_error", "Injected 500."))),
    (
        10,
        "409 lock_timeout",
        lambda m, p, stall: Fault(
            m, p, "respond", 409, {"Stripe-Should-Retry": "true"},
            _error("invalid_request_error", "This object cannot be accessed right now.", "lock_timeout"),
        ),
    ),
    (
        10,
        "429 should-retry",
        lambda m, p, stall: Fault(
            m, p, "respond", 429, {"Stripe-Should-Retry": "true"},
            _error("invalid_request_error", "Too many requests.", "rate_limit"),
        ),
    ),
    (
        10,
        "429",
        lambda m, p, stall: Fault(
            m, p, "respond", 429, body=_error("invalid_request_error", "Too many requests.", "rate_limit")
        ),
    ),
    (10, "503", lambda m, p, stall: Fault(m, p, "respond", 503, body=_error("api_error", "Injected 503."))),
    (25, "reset after Stripe acted", lambda m, p, stall: Fault(m, p, "reset")),
    (10, "stall past the timeout", lambda m, p, stall: Fault(m, p, "slow", delay=stall)),
]  # fmt: skip


class FaultPolicy:
    """Faults `rate` of the server's Stripe requests at random (seeded), and every one of them
    during an outage; counts what it injected by kind."""

    def __init__(self, *, rate: float, stall: float, seed: int) -> None:
        self.rate = rate
        self.stall = stall
        self.random = random.Random(seed)  # noqa: S311 - a reproducible run, not security
        self.injected: Counter[str] = Counter()
        self.seen = 0
        self._outage_until = 0.0
        self._lock = threading.Lock()
        self._weights = [weight for weight, _, _ in KINDS]

    def outage(self, seconds: float) -> None:
        """Stripe unreachable for `seconds`: every connection closed before anything is done."""
        with self._lock:
            self._outage_until = time.monotonic() + seconds

    def __call__(self, method: str, path: str) -> Fault | None:
        with self._lock:
            self.seen += 1
            if time.monotonic() < self._outage_until:
                self.injected["outage"] += 1
                return Fault(method, path, "drop")
            if self.random.random() >= self.rate:
                return None
            _, name, build = self.random.choices(KINDS, weights=self._weights)[0]
            self.injected[name] += 1
            return build(method, path, self.stall)

    def share(self) -> float:
        return sum(self.injected.values()) / self.seen if self.seen else 0.0
