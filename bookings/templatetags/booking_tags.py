"""Template tags of the booking pages: amounts in their currency, seats left."""

from django import template

from payments.money import format_amount

register = template.Library()


@register.simple_tag(name="money")
def money_tag(minor: int, currency: str) -> str:
    """An amount in minor units, written in its currency ("20.60 USD")."""
    return format_amount(minor, currency)


@register.simple_tag
def seats_left(event) -> int:
    """Seats left, from the list's annotation when there is one (one query for the whole list)."""
    held = getattr(event, "seats_held_now", None)
    return max(event.capacity - held, 0) if held is not None else event.seats_left()
