"""Booking pages (server-rendered)."""

from django.urls import include, path

from bookings import views

urlpatterns = [
    path("", views.event_list, name="event-list"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("events/<int:pk>/", views.event_detail, name="event-detail"),
    path("bookings/<int:pk>/", views.booking_detail, name="booking-detail"),
    path("bookings/<int:pk>/pay/", views.booking_pay, name="booking-pay"),
    path("bookings/<int:pk>/result/", views.payment_result, name="booking-payment-result"),
    path("bookings/<int:pk>/cancel/", views.booking_cancel, name="booking-cancel"),
    path("my-bookings/", views.my_bookings, name="my-bookings"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/", include("django.contrib.auth.urls")),
]
