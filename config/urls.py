"""The project's URL map."""

from csp.constants import SELF
from csp.decorators import csp_replace
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework_simplejwt.views import TokenBlacklistView

from config.health import HealthView
from config.security import (
    LoginAccountThrottle,
    LoginAddressThrottle,
    TokenObtainView,
    TokenRefreshRotateOnceView,
    TokenRefreshThrottle,
)

LOGIN_THROTTLES = [LoginAddressThrottle, LoginAccountThrottle]
# Swagger UI comes from a CDN with an inline start-up script.
SWAGGER_POLICY = csp_replace(
    {
        "script-src": [SELF, "'unsafe-inline'", "https://cdn.jsdelivr.net"],
        "style-src": [SELF, "'unsafe-inline'", "https://cdn.jsdelivr.net"],
        "img-src": [SELF, "data:", "https://cdn.jsdelivr.net"],
    }
)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/auth/token/", TokenObtainView.as_view(throttle_classes=LOGIN_THROTTLES), name="token"),
    path(
        "api/auth/token/refresh/",
        TokenRefreshRotateOnceView.as_view(throttle_classes=[TokenRefreshThrottle]),
        name="token-refresh",
    ),
    # Logout: the refresh token is blacklisted; its access token dies within minutes.
    path(
        "api/auth/logout/", TokenBlacklistView.as_view(throttle_classes=[TokenRefreshThrottle]), name="logout"
    ),
    path("api/", include("bookings.api.urls")),
    path("api/", include("payments.api.urls")),
    path("api/", include("payments.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SWAGGER_POLICY(SpectacularSwaggerView.as_view(url_name="schema")), name="api-docs"),
    path("health/", HealthView.as_view(), name="health"),
    path("", include("bookings.urls")),
]

handler404 = "config.errors.not_found"
handler500 = "config.errors.server_error"
