"""Throttles for endpoints that create payments or refunds, per user, on the shared cache."""

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle


class PaymentRateThrottle(SimpleRateThrottle):
    """At most REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']['payments'] per user (read at each request)."""

    scope = "payments"

    def get_rate(self):
        rates: dict[str, str] = getattr(settings, "REST_FRAMEWORK", {}).get("DEFAULT_THROTTLE_RATES", {})
        return rates.get(self.scope)

    def get_cache_key(self, request, view):
        ident = request.user.pk if request.user and request.user.is_authenticated else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


class StatusRateThrottle(PaymentRateThrottle):
    """Status polls per user (REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']['payment_status']; none if unset)."""

    scope = "payment_status"
