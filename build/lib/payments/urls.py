"""URLs of the payments app's plain views (the host includes them under its API prefix)."""

from django.urls import path

from payments import views

app_name = "payments"

urlpatterns = [
    path("webhooks/stripe/", views.stripe_webhook, name="stripe-webhook"),
    path("webhooks/health/", views.webhook_health_view, name="webhook-health"),
]
