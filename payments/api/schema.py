"""OpenAPI generation: every operation documents the shared error envelope for its failure codes."""

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import Direction

from payments.api.errors import ErrorSerializer

# Answers any endpoint may give: bad input, auth, not found, wrong method, throttled, unavailable.
COMMON_ERROR_CODES = ("400", "401", "403", "404", "405", "409", "429", "503")


class ErrorEnvelopeAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction: Direction = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        for code in COMMON_ERROR_CODES:
            if code not in responses:
                responses[code] = self._get_response_for_code(ErrorSerializer, code, direction=direction)
        return responses
