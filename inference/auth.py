"""Bearer-key checks: a read key for the API, an admin key for ``/models/reload``.

With no read key configured the API is open (the server then binds only to loopback, see
``settings.check_bind_safety``); the admin key defaults to the read key. Keys are compared in
constant time.
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
    key = settings.admin_api_key or settings.api_key
    if not key:
        return
    token = bearer_token(request)
    if _matches(token, key):
        return
    if token is not None and _matches(token, settings.api_key):
        raise APIError(403, "this endpoint needs the admin API key", PERMISSION, None, "admin_key_required")
    raise APIError(401, "missing admin API key (Authorization: Bearer <key>)" if token is None
                   else "incorrect admin API key", AUTHENTICATION, None, "invalid_api_key")
