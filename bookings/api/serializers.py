"""Serializers of the booking API; amounts are integers in minor units with their currency."""

from rest_framework import serializers

from bookings.conf import booking_setting
from bookings.models import Booking, Event
from payments import selectors as payment_selectors


class EventSerializer(serializers.ModelSerializer):
    seats_left = serializers.SerializerMethodField()
    host = serializers.CharField(source="host.get_username", read_only=True)

    class Meta:
        model = Event
        fields = [
            "id",
            "title",
            "description",
            "venue",
            "starts_at",
            "price",
            "currency",
            "capacity",
            "seats_left",
            "host",
        ]
        read_only_fields = fields

    def get_seats_left(self, event: Event) -> int:
        held = getattr(event, "seats_held_now", None)
        return max(event.capacity - held, 0) if held is not None else event.seats_left()


class BookingSerializer(serializers.ModelSerializer):
    event_title = serializers.CharField(source="event.title", read_only=True)
    event_starts_at = serializers.DateTimeField(source="event.starts_at", read_only=True)
    payment_status = serializers.SerializerMethodField()

    class Meta:
        model = Booking
        fields = [
            "id",
            "reference",
            "event",
            "event_title",
            "event_starts_at",
            "quantity",
            "status",
            "subtotal",
            "fee",
            "total",
            "currency",
            "expires_at",
            "payment_status",
            "disputed_at",
            "created_at",
        ]
        read_only_fields = fields

    def get_payment_status(self, booking: Booking) -> str | None:
        if hasattr(booking, "latest_payment_status"):  # annotated by the list's queryset
            return booking.latest_payment_status
        return (
            payment_selectors.payments_of(booking)
            .order_by("-attempt")
            .values_list("status", flat=True)
            .first()
        )


class WholeNumberField(serializers.IntegerField):
    """An integer as JSON sends it (2) or as ASCII digits ("2"): never 2.0, "2.0", "٢" or true."""

    def to_internal_value(self, data):
        text = data.strip() if isinstance(data, str) else None
        if isinstance(data, bool) or not (
            isinstance(data, int)
            or (text is not None and text.isascii() and text.isdigit() and len(text) <= 9)
        ):
            self.fail("invalid")
        return super().to_internal_value(data)


class BookingCreateSerializer(serializers.Serializer):
    """Only what the booker chooses; amounts, status and owner are the server's."""

    event = WholeNumberField(min_value=1)
    quantity = WholeNumberField(min_value=1, max_value=booking_setting("MAX_SEATS_PER_BOOKING"))
