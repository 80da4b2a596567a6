"""The error taxonomy of Tollgate and the one place that turns errors into HTTP responses.

Every error a client sees has the OpenAI envelope:

    {"error": {"message": str, "type": str, "param": str | None, "code": "<status>"}}

    ProxyError (status, type, param)
    ├── BadRequest            400  invalid_request_error
    ├── AuthError             401  auth_error
    ├── Forbidden             403  (type given by the raiser)
    ├── NotFound              404  not_found
    ├── (409 idempotency_conflict, raised as a plain ProxyError by routes/llm.py)
    ├── (503 budget_tier_missing, by spend/admission.py: the default budget tier does not exist)
    ├── (503 service_unavailable while draining after SIGTERM, answered by app.py's request hook)
    ├── BudgetExceeded        422  budget_exceeded (status from budget_exceeded_status_code)
    ├── RateLimited           429  rate_limit_error, with retry-after
    ├── upstream errors       providers.base.UpstreamError: 4xx relayed, 5xx/unreachable 502, timeout 504;
    │                         the message names the deployment and the upstream's status, and the
    │                         response carries `x-litellm-model-id` and `x-tollgate-upstream-status`
    ├── unstorable value      spend.store.Unstorable: 400 invalid_request_error (text with NUL on PostgreSQL)
    └── storage unavailable   spend.store.StoreUnavailable: 503 service_unavailable, with retry-after
                              (the database cannot be reached or written: no call is served uncharged)

Werkzeug's HTTP exceptions (unknown route, wrong method, body too large) are mapped here too,
and anything unexpected becomes a 500 whose details go to the log with the request id, never
to the client.
"""

from __future__ import annotations

import logging

from flask import Flask, g, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from providers.base import UpstreamError
from spend.store import StoreUnavailable, Unstorable

log = logging.getLogger("tollgate")


class ProxyError(Exception):
    """An error with a client-facing message, an HTTP status and an OpenAI error type."""

    status = 500
    type = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        type: str | None = None,
        status: int | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}
        if type is not None:
            self.type = type
        if status is not None:
            self.status = status


class BadRequest(ProxyError):
    status = 400
    type = "invalid_request_error"


class AuthError(ProxyError):
    status = 401
    type = "auth_error"


class Forbidden(ProxyError):
    status = 403
    type = "permission_denied"


class NotFound(ProxyError):
    status = 404
    type = "not_found"


class BudgetExceeded(ProxyError):
    status = 422
    type = "budget_exceeded"


class RateLimited(ProxyError):
    status = 429
    type = "rate_limit_error"


def error_body(status: int, message: str, type: str, param: str | None = None) -> dict:
    """The OpenAI error envelope."""
    return {"error": {"message": message, "type": type, "param": param, "code": str(status)}}


def error_response(status: int, message: str, type: str, param: str | None = None):
    response = jsonify(error_body(status, message, type, param))
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    """Map every exception a request can raise onto the error envelope."""

    @app.errorhandler(ProxyError)
    def _proxy_error(exc: ProxyError):
        response = error_response(exc.status, exc.message, exc.type, exc.param)
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(UpstreamError)
    def _upstream_error(exc: UpstreamError):
        response = error_response(exc.client_status, exc.message, exc.type, None)
        if exc.deployment_id is not None:
            response.headers["x-litellm-model-id"] = exc.deployment_id
        if exc.status is not None:
            response.headers["x-tollgate-upstream-status"] = str(exc.status)
        return response

    @app.errorhandler(StoreUnavailable)
    def _store_unavailable(exc: StoreUnavailable):
        log.error("store unavailable request_id=%s: %s", g.get("request_id", "-"), exc)
        message = "The spend store is unavailable, so no call can be charged or served; retry shortly"
        response = error_response(503, message, "service_unavailable")
        response.headers["retry-after"] = "1"
        return response

    @app.errorhandler(Unstorable)
    def _unstorable(exc: Unstorable):
        return error_response(400, f"A value in the request cannot be stored: {exc}", "invalid_request_error")

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge):
        limit = app.config["MAX_CONTENT_LENGTH"]
        message = f"Request body too large: the limit is {limit} bytes"
        return error_response(413, message, "invalid_request_error")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        if status == 404:
            return error_response(404, "Not found: no such route", "not_found")
        if status == 405:
            return error_response(405, "Method not allowed on this route", "invalid_request_error")
        return error_response(status, exc.description or exc.name, "invalid_request_error")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        request_id = g.get("request_id", "-")
        log.exception("internal error request_id=%s", request_id)
        message = f"Internal server error; the details are logged under request id {request_id}"
        return error_response(500, message, "internal_error")
