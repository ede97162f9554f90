"""dj-stripe's URLs, as its documentation wires them."""

from django.urls import include, path

urlpatterns = [path("stripe/", include("djstripe.urls", namespace="djstripe"))]
