"""Booking pages (server-rendered)."""

from django.urls import path

from bookings import views

urlpatterns = [
    path("bookings/<int:pk>/result/", views.payment_result, name="booking-payment-result"),
]
