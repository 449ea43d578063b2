"""The OpenAI error envelope, and the one exception type every layer of the server raises.

Every client mistake becomes a 4xx with ``{"error": {"message", "type", "param", "code"}}`` so the
official ``openai`` client maps it to the right exception class (400 -> BadRequestError,
401 -> AuthenticationError, 404 -> NotFoundError, 429 -> RateLimitError, ...). Raising
``APIError`` anywhere below the HTTP layer keeps validation code free of FastAPI imports.
"""
from __future__ import annotations

from typing import Any

# OpenAI's error "type" strings (plus a few of ours for states OpenAI does not have).
INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
PERMISSION = "permission_error"
NOT_FOUND = "not_found_error"
RATE_LIMIT = "rate_limit_error"
SERVER = "server_error"
UNAVAILABLE = "service_unavailable"


class APIError(Exception):
    """An error with its HTTP status and OpenAI-style envelope fields."""

    def __init__(self, status: int, message: str, type: str = INVALID_REQUEST,
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def envelope(self) -> dict[str, Any]:
        return error_envelope(self.message, self.type, self.param, self.code)


def error_envelope(message: str, type: str = INVALID_REQUEST, param: str | None = None,
                   code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = "invalid_value") -> APIError:
    return APIError(400, message, INVALID_REQUEST, param, code)
