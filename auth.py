"""Master-key authentication for every route but the health probes (SPEC §3)."""

from __future__ import annotations

import hashlib
import hmac
import logging

from flask import g, request

from errors import AuthError

log = logging.getLogger("tollgate.auth")
OPEN_PATHS = frozenset({"/health/liveliness", "/health/liveness", "/health/readiness"})


def presented_key(headers) -> str | None:
    """The key a request carries: `Authorization: Bearer`, `api-key` or `x-api-key`."""
    authorization = headers.get("Authorization")
    if authorization:
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthError("Authentication Error, Malformed API Key passed in. Ensure Key has `Bearer ` prefix.")
        return key.strip()
    return headers.get("api-key") or headers.get("x-api-key") or None


def require_master_key(master_key: str):
    """A `before_request` hook refusing requests without the master key."""
    expected = master_key.encode()
    key_digest = key_hash(master_key)  # the only accepted key, so its digest is known up front

    def check() -> None:
        if request.path in OPEN_PATHS or request.url_rule is None:
            return  # health probes are open; unknown routes answer 404 by themselves
        try:
            key = presented_key(request.headers)
            if key is None:
                raise AuthError("Authentication Error, No api key passed in.")
            if not hmac.compare_digest(key.encode(), expected):
                raise AuthError("Authentication Error, Invalid proxy server token passed")
        except AuthError as exc:
            # One line, never the key: a request without the key is not a call and leaves no spend-log row.
            log.warning("unauthenticated request_id=%s path=%s reason=%s", g.get("request_id", "-"), request.path,
                        exc.message)  # fmt: skip
            raise
        g.key_hash = key_digest

    return check


def key_hash(key: str) -> str:
    """The SHA-256 hex digest that stands for a key wherever one must be named."""
    return hashlib.sha256(key.encode()).hexdigest()
