"""Logins and tokens: who the client is behind a known number of trusted proxies, the login
throttles and lockouts, refresh tokens that rotate once and die with a password change."""

from __future__ import annotations

import ipaddress

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from rest_framework_simplejwt.serializers import TokenRefreshSerializer
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from payments.api.throttles import CountingRateThrottle


def num_proxies() -> int:
    """How many trusted proxies stand in front of the site (NUM_PROXIES; 0: none, trust nobody)."""
    return int(getattr(settings, "REST_FRAMEWORK", {}).get("NUM_PROXIES") or 0)


def client_ip(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or with N trusted proxies the address the outermost of
    them saw (N-th from the right in X-Forwarded-For); what a client writes there itself never counts."""
    remote = request.META.get("REMOTE_ADDR", "")
    proxies = num_proxies()
    forwarded = request.headers.get("x-forwarded-for", "")
    if not proxies or not forwarded:
        return remote
    addresses = [part.strip() for part in forwarded.split(",") if part.strip()]
    chosen = addresses[-min(proxies, len(addresses))] if addresses else ""
    try:
        return str(ipaddress.ip_address(chosen))
    except ValueError:  # not an address (a port, a name, garbage): the connection's own
        return remote


class _SettingRateThrottle(CountingRateThrottle):
    """A counting throttle keyed on the client address as config.security reads it."""

    def get_ident(self, request) -> str:
        return client_ip(request)


class LoginAddressThrottle(_SettingRateThrottle):
    """Token requests per client address (behind NUM_PROXIES trusted proxies)."""

    scope = "auth"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class TokenRefreshThrottle(LoginAddressThrottle):
    """Refresh and logout requests per client address, counted apart from password attempts."""

    scope = "token_refresh"


class LoginAccountThrottle(_SettingRateThrottle):
    """Token requests per account named in the body, from any address."""

    scope = "auth_account"

    def get_cache_key(self, request, view):
        data = request.data if hasattr(request.data, "get") else {}
        username = str(data.get("username") or "").strip().lower()
        if not username:
            return None
        return self.cache_format % {"scope": self.scope, "ident": username[:150]}


def _error_response(code: str, message: str, status: int) -> JsonResponse:
    error = {"code": code, "message": message, "decline_code": None, "param": None}
    return JsonResponse({"error": error}, status=status)


def lockout_response(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """What django-axes answers once an address or an account has failed too many logins."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    message = f"Too many failed logins. Try again in {minutes} minutes."
    if request.path.startswith("/api/"):
        return _error_response("throttled", message, 429)
    return render(request, "registration/locked_out.html", {"message": message}, status=429)


class TokenObtainView(TokenObtainPairView):
    """simplejwt's token pair, refused while django-axes has locked the address or the account.

    Axes answers locked-out logins in its middleware, which cannot see a lockout decided inside
    a REST framework view: the view asks axes itself first.
    """

    def post(self, request, *args, **kwargs):
        from axes.handlers.proxy import AxesProxyHandler

        data = request.data if hasattr(request.data, "get") else {}
        credentials = {"username": str(data.get("username") or "")}
        if len(credentials["username"]) > 150:  # no account has such a name (and it fits no column)
            return _error_response(
                "no_active_account", "No active account found with the given credentials.", 401
            )
        if AxesProxyHandler.is_locked(request._request, credentials):
            return lockout_response(request._request, None, credentials)
        return super().post(request, *args, **kwargs)


class LoginLockoutBackend(AxesStandaloneBackend):
    """django-axes's check on every login that comes with a request (site, admin, API token);
    logins without one (a test client, a script) are not web logins and pass to the next backend."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


class RotateOnceRefreshSerializer(TokenRefreshSerializer):
    """simplejwt's refresh with rotation, made race-free: the presented token's row is locked,
    checked and blacklisted in one transaction, so two requests with one token get one new pair."""

    default_error_messages = {"no_active_account": "No active account found for the given token."}

    def validate(self, attrs):
        from django.contrib.auth import get_user_model
        from django.db import transaction
        from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken
        from rest_framework_simplejwt.settings import api_settings
        from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
        from rest_framework_simplejwt.utils import get_md5_hash_password

        refresh = self.token_class(attrs["refresh"])  # signature, expiry, blacklist
        user_id = refresh.payload.get(api_settings.USER_ID_CLAIM)
        user = get_user_model().objects.filter(**{api_settings.USER_ID_FIELD: user_id}).first()
        if user is None:
            raise AuthenticationFailed(self.error_messages["no_active_account"], "no_active_account")
        if api_settings.CHECK_REVOKE_TOKEN and refresh.payload.get(
            api_settings.REVOKE_TOKEN_CLAIM
        ) != get_md5_hash_password(user.password):
            # Issued before the password changed (even one rotated at that very moment).
            raise AuthenticationFailed("The password changed since this token was issued.", "token_revoked")
        with transaction.atomic():
            jti = refresh.payload[api_settings.JTI_CLAIM]
            outstanding = OutstandingToken.objects.select_for_update().filter(jti=jti).first()
            if outstanding is None or BlacklistedToken.objects.filter(token=outstanding).exists():
                raise InvalidToken("Token is blacklisted")
            return super().validate(attrs)


class TokenRefreshRotateOnceView(TokenRefreshView):
    serializer_class = RotateOnceRefreshSerializer


def revoke_tokens_on_password_change(sender, instance, created: bool = False, **kwargs) -> None:
    """A changed password ends every session elsewhere: all of the user's refresh tokens are
    blacklisted (post_save, while Django still holds the new raw password on the instance)."""
    if created or getattr(instance, "_password", None) is None:
        return
    from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

    live = OutstandingToken.objects.filter(user=instance).exclude(blacklistedtoken__isnull=False)
    BlacklistedToken.objects.bulk_create(
        [BlacklistedToken(token=token) for token in live], ignore_conflicts=True
    )
