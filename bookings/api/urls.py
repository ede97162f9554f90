"""Routes of the booking API, with the payment endpoints nested under a booking."""

from rest_framework.routers import SimpleRouter
from rest_framework_nested.routers import NestedSimpleRouter

from bookings.api import views

router = SimpleRouter()
router.register("events", views.EventViewSet, basename="event")
router.register("bookings", views.BookingViewSet, basename="booking")

booking_router = NestedSimpleRouter(router, "bookings", lookup="booking")
booking_router.register("payment", views.BookingPaymentViewSet, basename="booking-payment")
booking_router.register("payments", views.BookingPaymentHistoryViewSet, basename="booking-payments")

urlpatterns = router.urls + booking_router.urls
