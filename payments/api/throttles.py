"""Throttles for endpoints that create payments or refunds, per user, on the shared cache."""

import logging
import time
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.cache import cache
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from payments.conf import payments_settings

if TYPE_CHECKING:
    # Not at run time: REST framework's APIView reads DEFAULT_THROTTLE_CLASSES in its class body,
    # so a host listing these throttles there would import rest_framework.views in a cycle.
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)


class CountingRateThrottle(SimpleRateThrottle):
    """A fixed-window counter kept with the cache's atomic incr and add (one Redis INCR per request).

    REST framework's own throttle reads, appends and writes back a list of timestamps, so parallel
    requests overwrite each other's counts; an increment cannot be lost. The rate is read from
    REST_FRAMEWORK at each request. When the cache is down the request is let through and
    logged: a throttle must never turn an outage of Redis into 500s on payment endpoints.
    Subclasses may read their rate elsewhere (the payments throttles: PAYMENTS["THROTTLE_RATES"]).
    """

    def get_rate(self) -> str | None:
        rates: dict[str, str] = getattr(settings, "REST_FRAMEWORK", {}).get("DEFAULT_THROTTLE_RATES", {})
        return rates.get(self.scope or "")

    def allow_request(self, request: Request, view: "APIView") -> bool:
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        limit, duration = self.parse_rate(self.rate)
        if limit is None or duration is None:
            return True
        window = int(time.time() // duration)
        counter = f"{key}:{window}"
        try:
            count = _count(counter, timeout=duration + 1)
        except Exception:
            logger.warning("throttle cache unavailable: request let through", extra={"scope": self.scope})
            return True
        if count > limit:
            self._wait = (window + 1) * duration - time.time()
            return False
        return True

    def wait(self) -> float | None:
        return getattr(self, "_wait", None)


def _count(counter: str, *, timeout: int) -> int:
    """Add one to `counter`, made with `timeout` by the window's first request; most requests
    find it there and cost one increment (Django's Redis incr: two round trips; add then incr: three)."""
    for _ in range(3):  # missing, then made by another request and gone again: rare
        try:
            return cache.incr(counter)
        except ValueError:  # not there yet: the window's first request (or the window just ended)
            if cache.add(counter, 1, timeout=timeout):
                return 1
    return 1  # could not be counted: let the request through, as when the cache is down


class CountingUserRateThrottle(CountingRateThrottle):
    """Counted per user (per address for anonymous requests); the rate from REST framework's
    DEFAULT_THROTTLE_RATES[scope]."""

    def get_cache_key(self, request: Request, view: "APIView") -> str | None:
        ident = request.user.pk if request.user and request.user.is_authenticated else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


class PaymentRateThrottle(CountingUserRateThrottle):
    """At most PAYMENTS['THROTTLE_RATES']['payments'] per user."""

    scope = "payments"

    def get_rate(self) -> str | None:
        return payments_settings.THROTTLE_RATES.get(self.scope or "")


class StatusRateThrottle(PaymentRateThrottle):
    """Status polls per user (PAYMENTS['THROTTLE_RATES']['payment_status']; none if None)."""

    scope = "payment_status"
