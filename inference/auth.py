"""Bearer-key checks: a read key for the API, an admin key for ``/models/reload``.

With no read key configured the API is open (the server then binds only to loopback, see
``settings.check_bind_safety``). A read key never opens an admin endpoint: with a read key but no
admin key, admin endpoints are disabled; with neither, the loopback-only server is open. Keys are
compared in constant time.
"""
from __future__ import annotations

import hmac

from fastapi import Request

from inference.errors import APIError, AUTHENTICATION, PERMISSION
from inference.settings import ServerSettings


def bearer_token(request: Request) -> str | None:
    h = request.headers.get("authorization", "")
    if h[:7].lower() == "bearer ":
        return h[7:].strip()
    return None


def _matches(token: str | None, key: str) -> bool:
    return bool(key) and token is not None and hmac.compare_digest(token.encode(), key.encode())


def require_read(settings: ServerSettings, request: Request) -> None:
    """With a read key configured, every endpoint but /health needs it (or the admin key)."""
    if not settings.api_key:
        return
    token = bearer_token(request)
    if _matches(token, settings.api_key) or _matches(token, settings.admin_api_key):
        return
    raise APIError(401, "missing API key (Authorization: Bearer <key>)" if token is None
                   else "incorrect API key", AUTHENTICATION, None, "invalid_api_key")


def require_admin(settings: ServerSettings, request: Request) -> None:
    if not settings.admin_api_key:
        if not settings.api_key:
            return  # open, loopback-only server
        raise APIError(403, "admin endpoints are disabled: a read key is set but no admin key (set "
                       "inference.admin_api_key, inference.admin_api_key_file or $INFERENCE_ADMIN_KEY)",
                       PERMISSION, None, "admin_key_not_configured")
    token = bearer_token(request)
    if _matches(token, settings.admin_api_key):
        return
    if token is not None and _matches(token, settings.api_key):
        raise APIError(403, "this endpoint needs the admin API key", PERMISSION, None, "admin_key_required")
    raise APIError(401, "missing admin API key (Authorization: Bearer <key>)" if token is None
                   else "incorrect admin API key", AUTHENTICATION, None, "invalid_api_key")
