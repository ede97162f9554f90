"""Template tags of the booking pages: amounts in their currency, seats left, event times."""

from django import template
from django.utils.dateformat import format as date_format

from payments.money import format_amount
from payments.states import refund_reason_label

register = template.Library()

START = object()  # "no moment given": the event's start (an explicit None shows nothing)


@register.simple_tag(name="money")
def money_tag(minor: int, currency: str) -> str:
    """An amount in minor units, written in its currency ("20.60 USD")."""
    return format_amount(minor, currency)


@register.simple_tag
def seats_left(event) -> int:
    """Seats left, from the list's annotation when there is one (one query for the whole list)."""
    held = getattr(event, "seats_held_now", None)
    return max(event.capacity - held, 0) if held is not None else event.seats_left()


@register.simple_tag
def event_time(event, moment=START, style: str = "long") -> str:
    """`moment` (default: the event's start) in the event's time zone, with the zone named:
    "Friday 4 December 2026, 19:00 CET (Europe/Berlin)"; style "short" or "time" for less."""
    if moment is START:
        moment = event.starts_at
    if moment is None or moment == "":
        return ""
    local = event.local(moment)
    pattern = {"long": "l j F Y, H:i", "short": "D j M Y, H:i", "time": "H:i"}[style]
    abbreviation = local.tzname() or ""
    zone = event.time_zone
    named = abbreviation if abbreviation == zone else f"{abbreviation} ({zone})"
    return f"{date_format(local, pattern)} {named}".strip()


@register.filter
def refund_reason(reason: str) -> str:
    return refund_reason_label(reason)
