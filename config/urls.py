"""The project's URL map."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from payments.api.throttles import AuthRateThrottle
from payments.api.views import HealthView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/auth/token/", TokenObtainPairView.as_view(throttle_classes=[AuthRateThrottle]), name="token"),
    path(
        "api/auth/token/refresh/",
        TokenRefreshView.as_view(throttle_classes=[AuthRateThrottle]),
        name="token-refresh",
    ),
    path("api/", include("bookings.api.urls")),
    path("api/", include("payments.api.urls")),
    path("api/", include("payments.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("health/", HealthView.as_view(), name="health"),
    path("", include("bookings.urls")),
]

handler404 = "config.errors.not_found"
handler500 = "config.errors.server_error"
