"""Site-wide REST framework pieces: JSON that cannot crash the parser, pages of bounded size."""

from __future__ import annotations

from django.conf import settings
from rest_framework.exceptions import APIException, ParseError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser


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
        length = request.META.get("CONTENT_LENGTH") if request is not None else None
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and str(length or "0").isdigit() and int(length or 0) > limit:
            raise RequestTooLarge()
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """limit/offset pages with a ceiling: ?limit=10^20 gives 100 rows, never every row or a 500."""

    max_limit = 100
    # Far beyond any real list, well inside PostgreSQL's bigint.
    max_offset = 10**9

    def get_offset(self, request) -> int:
        return min(super().get_offset(request), self.max_offset)
