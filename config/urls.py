"""The project's URL map."""

from csp.constants import SELF
from csp.decorators import csp_replace
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView
from rest_framework_simplejwt.views import TokenBlacklistView

from config.health import HealthView
from config.metrics import metrics_view
from config.security import (
    LoginAccountThrottle,
    LoginAddressThrottle,
    TokenObtainView,
    TokenRefreshRotateOnceView,
    TokenRefreshThrottle,
)

LOGIN_THROTTLES = [LoginAddressThrottle, LoginAccountThrottle]
# Swagger UI and ReDoc come from the installed sidecar package and start from script files (the
# split view, no inline script): the site's policy holds, but ReDoc's search runs in a worker it
# makes from a blob.
DOCS_POLICY = csp_replace({"worker-src": [SELF, "blob:"]})

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
    path("api/", include("credits.api.urls")),
    path("api/", include("payments.api.urls")),
    path("api/", include("payments.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", DOCS_POLICY(SpectacularSwaggerSplitView.as_view(url_name="schema")), name="api-docs"),
    path("api/redoc/", DOCS_POLICY(SpectacularRedocView.as_view(url_name="schema")), name="api-redoc"),
    path("health/", HealthView.as_view(), name="health"),
    path("metrics", metrics_view, name="metrics"),
    path("credits/", include("credits.urls")),
    path("", include("bookings.urls")),
]

handler404 = "config.errors.not_found"
handler500 = "config.errors.server_error"
