"""Read queries of the booking site."""

from __future__ import annotations

from django.contrib.contenttypes.models import ContentType
from django.db.models import CharField, IntegerField, OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from bookings.models import Booking, Event
from payments.models import Payment


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
    latest: dict[str, Payment] = {}
    payments = Payment.objects.filter(
        content_type=ContentType.objects.get_for_model(Booking), object_id__in=[str(b.pk) for b in bookings]
    )
    for payment in payments.prefetch_related("refunds").order_by("attempt"):
        latest[payment.object_id] = payment
    for booking in bookings:
        booking.payment = latest.get(str(booking.pk))
        booking.refunded = booking.payment.refunded_amount() if booking.payment else 0
    return bookings


def bookings_with_payment_status(queryset: QuerySet[Booking]) -> QuerySet[Booking]:
    """Annotate `latest_payment_status`: the status of each booking's latest payment attempt."""
    latest = Payment.objects.filter(
        content_type=ContentType.objects.get_for_model(Booking), object_id=Cast(OuterRef("pk"), CharField())
    ).order_by("-attempt")
    return queryset.annotate(latest_payment_status=Subquery(latest.values("status")[:1]))
