"""The site's URLs plus the reference views the benchmark compares the webhook endpoint with."""

from django.urls import path

from bench import views
from config.urls import urlpatterns as site_urlpatterns

urlpatterns = [
    path("bench/bare/", views.bare, name="bench-bare"),
    path("bench/plain/", views.plain, name="bench-plain"),
    path("bench/floor/", views.floor, name="bench-floor"),
    *site_urlpatterns,
]
