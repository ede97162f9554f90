"""Django admin for events and bookings."""

from django.contrib import admin

from bookings.models import Booking, EmailLog, Event
from payments import money


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("title", "starts_at", "time_zone", "venue", "price_display", "capacity", "host")
    list_filter = (("starts_at", admin.DateFieldListFilter), "currency")
    search_fields = ("title", "venue", "host__email")
    list_select_related = ("host",)

    @admin.display(description="price", ordering="price")
    def price_display(self, event: Event) -> str:
        return money.format_amount(event.price, event.currency)


@admin.register(Booking)
class BookingAdmin(admin.ModelAdmin):
    list_display = (
        "reference",
        "user",
        "event",
        "quantity",
        "total_display",
        "status",
        "disputed_at",
        "created_at",
    )
    list_filter = ("status", ("created_at", admin.DateFieldListFilter))
    search_fields = ("=reference", "user__email", "user__username", "event__title")
    list_select_related = ("user", "event")
    show_full_result_count = False
    readonly_fields = (
        "reference",
        "user",
        "event",
        "quantity",
        "status",
        "subtotal",
        "fee",
        "total",
        "currency",
        "expires_at",
        "confirmed_at",
        "cancelled_at",
        "disputed_at",
        "created_at",
        "updated_at",
    )

    def has_add_permission(self, request) -> bool:
        return False  # bookings are made through the booking service (seats, amounts)

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # every field is read-only: the page is for reading, with no Save

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="total", ordering="total")
    def total_display(self, booking: Booking) -> str:
        return money.format_amount(booking.total, booking.currency)


@admin.register(EmailLog)
class EmailLogAdmin(admin.ModelAdmin):
    list_display = ("booking", "kind", "recipient", "status", "attempts", "sent_at", "updated_at")
    list_filter = ("status", "kind")
    search_fields = ("=booking__reference", "recipient")
    list_select_related = ("booking",)
    readonly_fields = (
        "booking",
        "kind",
        "recipient",
        "status",
        "attempts",
        "last_error",
        "sent_at",
        "created_at",
        "updated_at",
    )

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
