"""Views of the booking API: thin wrappers around the booking and payment services."""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from bookings import services
from bookings.api.serializers import BookingCreateSerializer, BookingSerializer, EventSerializer
from bookings.models import Booking
from bookings.selectors import bookings_with_payment_status, upcoming_events
from payments.api.errors import ErrorSerializer
from payments.api.throttles import CountingUserRateThrottle
from payments.api.views import ERRORS, PayablePaymentHistoryViewSet, PayablePaymentViewSet


class BookingRateThrottle(CountingUserRateThrottle):
    """New bookings per user (REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']['bookings'])."""

    scope = "bookings"


class EventViewSet(viewsets.ReadOnlyModelViewSet):
    """Upcoming events with their price and the seats left."""

    serializer_class = EventSerializer
    permission_classes = [permissions.AllowAny]

    def get_queryset(self):
        return upcoming_events()


class BookingViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """The user's bookings; the amount is computed by the server from the event."""

    serializer_class = BookingSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Booking.objects.none()
        return bookings_with_payment_status(
            Booking.objects.filter(user=self.request.user).select_related("event")
        )

    def get_throttles(self):
        if self.action == "create":
            return [BookingRateThrottle()]
        return super().get_throttles()

    @extend_schema(
        request=BookingCreateSerializer, responses={201: BookingSerializer, 409: ErrorSerializer, **ERRORS}
    )
    def create(self, request, *args, **kwargs):
        body = BookingCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        booking = services.booking_create(
            user=request.user, event_id=body.validated_data["event"], quantity=body.validated_data["quantity"]
        )
        return Response(BookingSerializer(booking).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: BookingSerializer, 409: ErrorSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel: an unpaid booking frees its seats; a paid one is refunded within the policy."""
        booking = self.get_object()
        booking = services.booking_cancel_by_owner(booking_id=booking.pk, user=request.user)
        return Response(BookingSerializer(booking).data)


BOOKING_PK = OpenApiParameter(
    "booking_pk", OpenApiTypes.INT, OpenApiParameter.PATH, description="The booking's id"
)


@extend_schema(parameters=[BOOKING_PK])
class BookingPaymentViewSet(PayablePaymentViewSet):
    """/api/bookings/{booking_pk}/payment/<action>/"""

    payable_lookup = "booking_pk"

    def get_payable_queryset(self, *, any_owner: bool = False):
        bookings = Booking.objects.select_related("event", "user")
        return bookings if any_owner else bookings.filter(user=self.request.user)

    def start_payment(self, payable, **options):
        return services.booking_pay(booking_id=payable.pk, loaded=payable, **options)

    def retry_payment(self, payable, *, payment_method_id: str = ""):
        return services.booking_retry(booking_id=payable.pk, payment_method_id=payment_method_id)

    def start_checkout(self, payable, *, success_url, cancel_url):
        return services.booking_checkout(
            booking_id=payable.pk, success_url=success_url, cancel_url=cancel_url
        )

    def refund_deadline(self, payable):
        return payable.event.starts_at

    def checkout_return_urls(self, payable):
        base = settings.SITE_URL.rstrip("/")
        result = reverse("booking-payment-result", args=[payable.pk])
        return f"{base}{result}?session_id={{CHECKOUT_SESSION_ID}}", f"{base}{result}?canceled=1"


@extend_schema(parameters=[BOOKING_PK])
class BookingPaymentHistoryViewSet(PayablePaymentHistoryViewSet):
    """/api/bookings/{booking_pk}/payments/"""

    payable_lookup = "booking_pk"

    def get_payable_queryset(self):
        return Booking.objects.filter(user=self.request.user)
