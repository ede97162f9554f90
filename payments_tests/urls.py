"""URLs of the test project: the admin and the webhook; with the `api` extra, the REST endpoints
and donations nested under them."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("payments.urls")),
]

if settings.API:
    from rest_framework_nested import routers

    from payments_tests.donations.views import DonationPaymentViewSet

    router = routers.SimpleRouter()
    router.register("donations", DonationPaymentViewSet, basename="donation")
    nested = routers.NestedSimpleRouter(router, "donations", lookup="donation")
    nested.register("payment", DonationPaymentViewSet, basename="donation-payment")
    urlpatterns += [path("api/", include("payments.api.urls")), path("api/", include(nested.urls))]
