"""The BOOKINGS settings dict with defaults."""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {"HOLD_MINUTES": 15, "MAX_SEATS_PER_BOOKING": 10}


def booking_setting(name: str) -> Any:
    return {**DEFAULTS, **getattr(settings, "BOOKINGS", {})}[name]
