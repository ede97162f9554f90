"""Site-wide REST framework pieces: JSON that cannot crash the parser, pages of bounded size, and
the error envelope for every API answer."""

from __future__ import annotations

from django.conf import settings
from rest_framework.exceptions import APIException, ParseError, ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from payments.api.errors import error_response
from payments.api.errors import exception_handler as payments_exception_handler


class RequestTooLarge(APIException):
    status_code = 413
    default_code = "too_large"
    default_detail = "The request body is too large."


class BoundedJSONParser(JSONParser):
    """REST framework's JSON parser, answering a 413 for a body over DATA_UPLOAD_MAX_MEMORY_SIZE
    (it reads the stream itself, past Django's check) and a 400 for one nested too deeply to
    parse (Python's parser raises RecursionError, which would be a 500)."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        length = request.headers.get("content-length") if request is not None else None
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and str(length or "0").isdigit() and int(length or 0) > limit:
            raise RequestTooLarge()
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
        if not _storable(data):
            raise ParseError(
                "JSON parse error - the body holds characters that cannot be text (NUL, lone surrogates)."
            )
        return data


def _storable(value) -> bool:
    """No NUL and no lone surrogate in any key or string: PostgreSQL stores neither (a 500 later)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item or (not item.isascii() and any(0xD800 <= ord(c) <= 0xDFFF for c in item)):
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """limit/offset pages with a ceiling: ?limit=10^20 gives 100 rows, never every row or a 500."""

    max_limit = 100
    # Far beyond any real list, well inside PostgreSQL's bigint.
    max_offset = 10**9

    def get_limit(self, request) -> int | None:
        _require_whole_number(request, self.limit_query_param)
        return super().get_limit(request)

    def get_offset(self, request) -> int:
        _require_whole_number(request, self.offset_query_param)
        return min(super().get_offset(request), self.max_offset)


def _require_whole_number(request, name: str) -> None:
    """A 400 for ?limit=abc or ?offset=-1, which REST framework would quietly ignore."""
    value = request.query_params.get(name)
    if value is not None and not (value.isascii() and value.isdigit()):
        raise ValidationError({name: "A whole number of 0 or more."})


def exception_handler(exc, context):
    """The site's API errors: the payments app's envelope for everything, with simplejwt's token
    errors in the site's words."""
    if isinstance(exc, InvalidToken | TokenError):
        return error_response("token_not_valid", "The token is invalid or expired.", 401)
    return payments_exception_handler(exc, context)
