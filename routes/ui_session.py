"""The dashboard's login session: a signed cookie, a CSRF token, and the app settings they need.

Why a signed cookie rather than a server-side record: every gunicorn worker (and every box of a
deployment) holds the same master key, so a secret derived from it lets any of them check a
session without a table, a migration or a shared memory. The cookie holds only a flag, the
session's expiry and its CSRF token, signed (not encrypted) by Flask with that secret:

- it is HttpOnly, SameSite=Strict, limited to `/ui`, and Secure whenever the request came over
  https (directly or through a proxy gunicorn trusts with `X-Forwarded-Proto`);
- it expires 8 hours after login, checked on the server against the signed expiry;
- changing the master key changes the secret, which ends every session at once;
- logout clears the cookie; a copy taken before logout stays valid until its expiry, the price of
  keeping no server-side record.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable

from flask import Flask, request, session
from flask.sessions import SecureCookieSessionInterface

from errors import Forbidden

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
    """This browser's CSRF token, made on first use (also before login, for the login form)."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    """Every POST carries the session's token in a form field; 403 otherwise, before anything changes."""
    expected = session.get("csrf")
    given = request.form.get(CSRF_FIELD, "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Forbidden(
            "The form's security token is missing or out of date: reload the page and try again.",
            param=CSRF_FIELD,
            type="csrf_error",
        )


def log_in(now: float) -> None:
    """Start a session: a fresh CSRF token (nothing from before login carries over) and its expiry."""
    session.clear()
    session["csrf"] = secrets.token_urlsafe(32)
    session["until"] = now + SESSION_SECONDS


def logged_in(now: float) -> bool:
    until = session.get("until")
    return isinstance(until, int | float) and now < until


def log_out() -> None:
    session.clear()
