"""Django admin for events and bookings."""

import zoneinfo

from django.contrib import admin
from django.utils import timezone

from bookings.models import Booking, EmailLog, Event, default_time_zone
from bookings.templatetags.booking_tags import event_time
from payments import money


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("title", "starts_local", "venue", "price_display", "capacity", "host")
    list_filter = (("starts_at", admin.DateFieldListFilter), "currency")
    search_fields = ("title", "venue", "host__email")
    list_select_related = ("host",)

    @admin.display(description="starts", ordering="starts_at")
    def starts_local(self, event: Event) -> str:
        return event_time(event, style="short")  # in the event's zone, named, as its pages say

    @admin.display(description="price", ordering="price")
    def price_display(self, event: Event) -> str:
        return money.format_amount(event.price, event.currency)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        """The start is entered and shown in the event's own time zone, as its pages show it (not
        the site's): the zone posted with the form, else the event's, else the default."""
        with timezone.override(self._form_zone(request, object_id)):
            response = super().changeform_view(request, object_id, form_url, extra_context)
            if hasattr(response, "render"):
                response.render()  # the fields' values are written now, in this zone, not later
            return response

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        form.base_fields["starts_at"].help_text = "In the event's time zone (below), as its pages show it."
        return form

    @staticmethod
    def _form_zone(request, object_id) -> zoneinfo.ZoneInfo:
        names = [request.POST.get("time_zone", "")] if request.method == "POST" else []
        if object_id and str(object_id).isdigit():
            names.append(Event.objects.filter(pk=object_id).values_list("time_zone", flat=True).first() or "")
        for name in [*names, default_time_zone()]:
            try:
                return zoneinfo.ZoneInfo(name.strip())
            except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe", a folder
                continue
        return zoneinfo.ZoneInfo("UTC")


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
