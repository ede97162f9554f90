"""Events people can book seats at, and their bookings."""

from __future__ import annotations

import secrets
import zoneinfo
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q, Sum
from django.utils import timezone

from config.outbox import OutboxEmail

REFERENCE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def new_reference() -> str:
    return "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(8))


def validate_time_zone(name: str) -> None:
    if name not in zoneinfo.available_timezones():
        raise ValidationError(
            f"{name!r} is not a time zone name such as Europe/London.", code="invalid_timezone"
        )


def default_time_zone() -> str:
    return settings.TIME_ZONE


class Event(models.Model):
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    venue = models.CharField(max_length=200)
    starts_at = models.DateTimeField(db_index=True)
    time_zone = models.CharField(
        max_length=64,
        default=default_time_zone,
        validators=[validate_time_zone],
        help_text="Where the event happens (an IANA name such as Europe/London); its times are shown in it.",
    )
    price = models.BigIntegerField(help_text="Price of one seat in minor units.")
    currency = models.CharField(max_length=3, default="usd")
    capacity = models.PositiveIntegerField()
    host = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="hosted_events")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["starts_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(price__gt=0), name="event_price_positive"),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        try:
            return zoneinfo.ZoneInfo(self.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return zoneinfo.ZoneInfo("UTC")

    def local(self, moment: datetime) -> datetime:
        """`moment` in the event's time zone."""
        return moment.astimezone(self.zone)

    def seats_held(self) -> int:
        return Booking.objects.holding_seats().filter(event=self).aggregate(n=Sum("quantity"))["n"] or 0

    def seats_left(self) -> int:
        return max(self.capacity - self.seats_held(), 0)


class BookingQuerySet(models.QuerySet):
    def holding_seats(self) -> BookingQuerySet:
        """Confirmed bookings and pending ones whose hold has not run out."""
        now = timezone.now()
        return self.filter(
            Q(status=Booking.Status.CONFIRMED) | Q(status=Booking.Status.PENDING, expires_at__gt=now)
        )


class Booking(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending payment"
        CONFIRMED = "confirmed", "Confirmed"
        CANCELLED = "cancelled", "Cancelled"
        EXPIRED = "expired", "Expired"

    reference = models.CharField(max_length=12, unique=True, default=new_reference)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="bookings")
    event = models.ForeignKey(Event, on_delete=models.PROTECT, related_name="bookings")
    quantity = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    subtotal = models.BigIntegerField()
    fee = models.BigIntegerField()
    total = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    disputed_at = models.DateTimeField(null=True, blank=True, help_text="When the payer disputed the charge.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BookingQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["event", "status"]),
            models.Index(fields=["user", "-created_at"]),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gt=0), name="booking_quantity_positive"),
            models.CheckConstraint(
                condition=Q(total=models.F("subtotal") + models.F("fee")),
                name="booking_total_is_subtotal_plus_fee",
            ),
        ]

    def __str__(self) -> str:
        return f"Booking {self.reference}"

    @property
    def payment_description(self) -> str:
        return f"{self.quantity} × {self.event.title} (booking {self.reference})"


class EmailLog(OutboxEmail):
    """One email about a booking, sent at most once per kind (the unique constraint is the guard)."""

    booking = models.ForeignKey(Booking, on_delete=models.CASCADE, related_name="emails")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["booking", "kind"], name="email_once_per_booking_kind")
        ]

    def __str__(self) -> str:
        return f"{self.kind} email for {self.booking} ({self.status})"
