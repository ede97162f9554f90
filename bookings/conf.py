"""The BOOKINGS settings dict with defaults."""

from datetime import timedelta
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "HOLD_MINUTES": 15,
    "MAX_SEATS_PER_BOOKING": 10,
    # Unpaid holds one user may keep at once, and the seats they hold in all: nobody empties an
    # event by booking without paying.
    "MAX_OPEN_HOLDS": 3,
    "MAX_HELD_SEATS": 20,
    # Emails: attempts in all, and the first retry delay in seconds (then doubling, jittered).
    "EMAIL_MAX_ATTEMPTS": 5,
    "EMAIL_RETRY_DELAY": 30.0,
    # The sweep sends emails still pending this long (their task was lost); longer than a retry's
    # longest wait plus a task's time limit, so a retry is never doubled.
    "EMAIL_SWEEP_AFTER": timedelta(minutes=7),
    # A claimed (`sending`) email whose worker died is sent again after this, with the same
    # Message-ID; longer than a task's time limit, so a send still under way is never doubled.
    "EMAIL_CLAIM_EXPIRES_AFTER": timedelta(minutes=5),
}


def booking_setting(name: str) -> Any:
    return {**DEFAULTS, **getattr(settings, "BOOKINGS", {})}[name]
