"""The dashboard's login session: kept on the server, with a CSRF token, and the app settings they need.

A login opens a session in the database (`Admin.open_session`: every worker and every box of a
deployment sees it) and gives the browser a random 256-bit token; the database keeps only the
token's SHA-256, the session's own CSRF token, its expiry (8 hours) and the digest of the master
key it was opened with. Logging out deletes the row, so a copy of the cookie taken before is
worth nothing after; changing the master key ends every session.

The token travels in Flask's session cookie, signed with a secret derived from the master key
(never the key itself). The cookie is HttpOnly, SameSite=Strict, limited to `/ui`, and Secure
whenever the request came over https (directly or through a proxy gunicorn trusts with
`X-Forwarded-Proto`). Before login the cookie carries only the login form's CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable

from flask import Flask, g, request, session
from flask.sessions import SecureCookieSessionInterface

import gateway as gateway_state
from errors import Forbidden
from spend.store import DashboardSession

SESSION_SECONDS = 8 * 3600
CSRF_FIELD = "csrf_token"
# Kept apart from the master key itself: the cookie's signing key is derived, never the key.
_SECRET_CONTEXT = b"tollgate dashboard session v1"


def session_secret(master_key: str) -> bytes:
    """The cookie signing key: an HMAC of a fixed context under the master key."""
    return hmac.new(master_key.encode(), _SECRET_CONTEXT, hashlib.sha256).digest()


class DashboardSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the Secure flag set per request: on when the request
    arrived over https, so the same deployment works on plain http behind nothing (local use)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure or super().get_cookie_secure(app)


def install(app: Flask, master_key: str) -> None:
    """Give `app` the dashboard's session: the derived secret and the cookie's flags."""
    app.secret_key = session_secret(master_key)
    app.session_interface = DashboardSessions()
    app.config.update(
        SESSION_COOKIE_NAME="tollgate_ui",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH="/ui",
    )


def outside_dashboard(check: Callable[[], None]) -> Callable[[], None]:
    """The API's master-key hook, skipped for the dashboard's pages, which have their own login."""

    def hook() -> None:
        if request.blueprint == "ui":
            return None
        return check()

    return hook


def key_matches(given: str, master_key: str) -> bool:
    """Constant-time comparison of the key typed at login with the master key."""
    return hmac.compare_digest(given.encode(), master_key.encode())


def csrf_token() -> str:
    """The CSRF token of this browser's session; before login, the login form's, kept in the cookie."""
    found = _current()
    if found is not None:
        return found.csrf_token
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    """Every POST carries its session's token in a form field; 403 otherwise, before anything changes."""
    expected = csrf_token() if (_current() is not None or session.get("csrf")) else None
    given = request.form.get(CSRF_FIELD, "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Forbidden(
            "The form's security token is missing or out of date: reload the page and try again.",
            param=CSRF_FIELD,
            type="csrf_error",
        )


def log_in(now: float) -> None:
    """Open a session on the server and hand the browser its token (nothing from before login carries over)."""
    gw = gateway_state.current()
    token = secrets.token_urlsafe(32)
    opened = DashboardSession(_digest(token), secrets.token_urlsafe(32), _key_digest(gw.config.master_key),
                              now + SESSION_SECONDS)  # fmt: skip
    gw.store.admin.open_session(opened, now)
    session.clear()
    session["sid"] = token
    g.dashboard_session = opened


def logged_in(now: float) -> bool:
    return _current(now) is not None


def log_out() -> None:
    """End the session on the server (a copy of the cookie opens nothing after this) and in the browser."""
    token = session.get("sid")
    if isinstance(token, str):
        gateway_state.current().store.admin.close_session(_digest(token))
    session.clear()
    g.dashboard_session = None


def _current(now: float | None = None) -> DashboardSession | None:
    """This request's session, read from the store once per request: None when there is none, it
    expired, was closed, or was opened with another master key."""
    if "dashboard_session" in g:
        return g.dashboard_session
    gw = gateway_state.current()
    token = session.get("sid")
    found = None
    if isinstance(token, str):
        found = gw.store.admin.find_session(_digest(token), gw.clock() if now is None else now)
        if found is not None and not hmac.compare_digest(found.key_hash, _key_digest(gw.config.master_key)):
            found = None
    g.dashboard_session = found
    return found


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _key_digest(master_key: str) -> str:
    return hashlib.sha256(master_key.encode()).hexdigest()
