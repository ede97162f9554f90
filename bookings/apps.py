"""App configuration for bookings."""

from django.apps import AppConfig


class BookingsConfig(AppConfig):
    name = "bookings"
    verbose_name = "Bookings"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from bookings import receivers  # noqa: F401  (connects the payment signal receivers)
        from bookings.exceptions import BookingError
        from payments.api.errors import register_error

        register_error(BookingError, 409)
