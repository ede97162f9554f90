"""One error envelope for every API failure: {"error": {code, message, decline_code, param}}.

Opt in with REST_FRAMEWORK["EXCEPTION_HANDLER"] = "payments.api.errors.exception_handler" (or call
it from a handler of your own, as the booking site does for its JWT errors)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import OperationalError
from django.http import Http404
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response

from payments.exceptions import PaymentError, ProviderError

if TYPE_CHECKING:
    # The stubs' alias for an exception's detail (ErrorDetail, or lists and dicts of them): it
    # exists only in djangorestframework-stubs.
    from rest_framework.exceptions import _Detail

logger = logging.getLogger(__name__)


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    decline_code = serializers.CharField(allow_null=True)
    param = serializers.CharField(allow_null=True)


class ErrorSerializer(serializers.Serializer):
    """The shape of every error answer (for the schema)."""

    error = ErrorDetailSerializer()


def error_response(
    code: str,
    message: str,
    http_status: int,
    *,
    decline_code: str | None = None,
    param: str | None = None,
    headers: dict | None = None,
) -> Response:
    body = {"error": {"code": code, "message": message, "decline_code": decline_code, "param": param}}
    return Response(body, status=http_status, headers=headers)


def _first_error(detail: _Detail, path: str = "") -> tuple[str | None, str, str]:
    """(param, message, code) of the first error in a DRF detail structure."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = key if key != "non_field_errors" else ""
            param, message, code = _first_error(value, f"{path}.{name}".strip(".") if name else path)
            return param, message, code
    if isinstance(detail, list) and detail:
        return _first_error(detail[0], path)
    return path or None, str(detail), getattr(detail, "code", "invalid") or "invalid"


def _code(exc: exceptions.APIException, fallback: str) -> str:
    codes = exc.get_codes()
    return codes if isinstance(codes, str) else fallback


_HOSTED_ERRORS: list[tuple[type, int]] = []


def register_error(exc_class: type, http_status: int) -> None:
    """Let a host app map its own exceptions (with `code` and `message`) into the envelope."""
    _HOSTED_ERRORS.append((exc_class, http_status))


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    if isinstance(exc, PaymentError):
        if isinstance(exc, ProviderError) and exc.http_status >= 500:
            logger.warning("provider unavailable", extra={"error_code": exc.code})
        return error_response(
            exc.code,
            exc.message,
            exc.http_status,
            decline_code=getattr(exc, "decline_code", None),
            param=getattr(exc, "param", None),
        )
    for exc_class, http_status in _HOSTED_ERRORS:
        if isinstance(exc, exc_class):
            return error_response(
                getattr(exc, "code", "error"), getattr(exc, "message", str(exc)), http_status
            )
    if isinstance(exc, DjangoValidationError):
        message = exc.messages[0] if exc.messages else "Invalid input."
        return error_response(getattr(exc, "code", None) or "invalid", message, status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, Http404 | ObjectDoesNotExist):
        return error_response("not_found", "Not found.", status.HTTP_404_NOT_FOUND)
    if isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.ValidationError):
        param, message, code = _first_error(exc.detail)
        return error_response(code if code != "invalid" else "invalid", message, 400, param=param)
    if isinstance(exc, exceptions.Throttled):
        seconds = getattr(exc, "wait", None)
        wait = f" Try again in {int(seconds)} seconds." if seconds else ""
        headers = {"Retry-After": str(int(seconds))} if seconds else None
        return error_response("throttled", f"Too many requests.{wait}", 429, headers=headers)
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        # An authentication package's detail may be a dict ({"detail": ..., "code": ...}): its
        # words, never its repr.
        _param, message, _code_of = _first_error(exc.detail)
        response = error_response(_code(exc, "not_authenticated"), message, status.HTTP_401_UNAUTHORIZED)
        response["WWW-Authenticate"] = 'Bearer realm="api"'
        return response
    if isinstance(exc, exceptions.APIException):
        _param, message, _code_of = _first_error(exc.detail)
        return error_response(_code(exc, str(exc.default_code)), message, exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        return error_response("too_large", "The request body is too large.", 413)
    if isinstance(exc, OperationalError):
        logger.exception("database unavailable")
        return error_response("unavailable", "The service is unavailable. Please try again.", 503)
    logger.exception("unhandled API error", extra={"view": type(context.get("view")).__name__})
    return error_response("internal_error", "Something went wrong on our side.", 500)
