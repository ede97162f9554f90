"""Read queries of the booking site."""

from __future__ import annotations

from django.db.models import IntegerField, OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from bookings.models import Booking, Event
from payments import selectors as payment_selectors


def _seats_held():
    held = (
        Booking.objects.holding_seats()
        .filter(event=OuterRef("pk"))
        .values("event")
        .annotate(n=Sum("quantity"))
        .values("n")
    )
    return Coalesce(Subquery(held, output_field=IntegerField()), 0)


def upcoming_events() -> QuerySet[Event]:
    """Events not yet started, with `seats_held_now` annotated, soonest first."""
    return (
        Event.objects.filter(starts_at__gt=timezone.now())
        .select_related("host")
        .annotate(seats_held_now=_seats_held())
        .order_by("starts_at", "id")
    )


def bookings_of(user) -> list[Booking]:
    """The user's bookings, each with `payment` (the latest attempt) and `refunded` (minor units)."""
    bookings = list(Booking.objects.filter(user=user).select_related("event").order_by("-created_at"))
    latest = payment_selectors.latest_payments(Booking, bookings)
    for booking in bookings:
        booking.payment = latest.get(booking.pk)
        booking.refunded = booking.payment.refunded_amount() if booking.payment else 0
    return bookings


def bookings_with_payment_status(queryset: QuerySet[Booking]) -> QuerySet[Booking]:
    """Annotate `latest_payment_status`: the status of each booking's latest payment attempt."""
    return queryset.annotate(latest_payment_status=payment_selectors.latest_payment_status(Booking))
