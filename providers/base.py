"""What every provider adapter shares: usage, replies, upstream errors and the one `send`.

An adapter turns an OpenAI-style request into the provider's HTTP call (`build_request`, pure)
and the provider's answer back into an OpenAI-shaped reply with normalized usage
(`parse_response`, pure). `send` is the only function that talks to an upstream over HTTP.

Every upstream error says where it came from: "Upstream '<model>' (deployment <id>) returned HTTP
<status>: <the upstream's message>", so it never reads like one of Tollgate's own errors, and the
credentials the call carried (its `Authorization`, `api-key` or `x-api-key` value, and any such
header an upstream echoes back) are taken out of the message first (`redact`).

    UpstreamError                   what the client gets
    ├── UpstreamHTTPError           4xx: the same status, the upstream's message; 5xx: 502
    ├── UpstreamUnavailable         502 (connection refused, reset, DNS)
    ├── UpstreamTimeout             504
    ├── UpstreamBadResponse         502 (not JSON, not an object)
    └── NotForThisProvider          400 (the client's request cannot go to this provider)
        └── UnsupportedParams       400 (parameters the provider rejects, drop_params off)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from providers.http import Response, TransportError, TransportTimeout, Upstreams

MAX_ERROR_MESSAGE = 500
URL_SAFE = "!#$%&'()*+,/:;=?@[]~"  # what stays as written in a URL; anything else is percent-encoded
REDACTED = "[redacted]"
CREDENTIAL_HEADERS = ("authorization", "api-key", "x-api-key", "proxy-authorization")
# A credential as it appears in text: a header (or JSON field) named like one with its value, or a
# bare `Bearer`/`Basic` token.
_CREDENTIAL_TEXT = re.compile(
    r"(?i)(\b(?:proxy-)?authorization|\bx-api-key|\bapi-key|\bapi_key)(\\?[\"']?\s*[:=]\s*\\?[\"']?)"
    r"(?:(?:bearer|basic)\s+)?[^\s\"',;}\\]+"
)
_TOKEN_TEXT = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}")
# Tollgate's own error types: an upstream's error is never relayed under one of them.
OWN_TYPES = frozenset(
    {"not_found", "auth_error", "budget_exceeded", "customer_model_access_denied", "model_cost_map_missing",
     "idempotency_conflict", "service_unavailable", "internal_error", "permission_denied"}
)  # fmt: skip


@dataclass(frozen=True)
class Usage:
    """Token counts of one call, normalized across providers.

    `prompt_tokens` counts every input token, cached and cache-written ones included (OpenAI's
    convention); `cached_tokens` and `cache_creation_tokens` say how many of them were read from
    or written to the provider's prompt cache. `completion_tokens` includes reasoning tokens.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Reply:
    """An upstream's successful answer: the OpenAI-shaped body (and its bytes when unchanged)."""

    body: dict
    usage: Usage
    raw: bytes | None = None

    @property
    def response_id(self) -> str | None:
        """The upstream's id of this answer (`chatcmpl-…`, `resp_…`, `msg_…`), when it has one."""
        value = self.body.get("id")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class HttpCall:
    """One prepared upstream request."""

    url: str
    headers: dict
    json: dict
    params: dict | None = None


class UpstreamError(Exception):
    """The upstream did not give a usable answer."""

    client_status = 502
    type = "upstream_error"
    status: int | None = None  # the upstream's HTTP status, when it answered
    deployment_id: str | None = None  # set by the call that tried the deployment

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UpstreamHTTPError(UpstreamError):
    """The upstream answered with an error status: a 4xx is the client's (same status, the upstream's
    type unless it is one of Tollgate's own), a 5xx is a 502."""

    def __init__(self, status: int, message: str, type: str | None = None):
        super().__init__(message)
        self.status = status
        if 400 <= status < 500:
            self.client_status = status
            self.type = type if type and type not in OWN_TYPES else "upstream_error"


class NotForThisProvider(UpstreamError):
    """The request cannot be sent to this provider as it is: the client's to fix, a 400, not retried."""

    client_status = 400
    type = "invalid_request_error"


class UnsupportedParams(NotForThisProvider):
    """The request has parameters the provider rejects and `drop_params` is off."""


class UpstreamUnavailable(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    client_status = 504
    type = "timeout"


class UpstreamBadResponse(UpstreamError):
    pass


def label(deployment) -> str:
    """How error messages name a deployment: its model name and id (never its URL or key)."""
    return f"'{deployment.model_name}' (deployment {deployment.id})"


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` without credentials: each of `secrets` literally, and anything that reads like an
    `Authorization`/`api-key` header value or a `Bearer` token."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _CREDENTIAL_TEXT.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _TOKEN_TEXT.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


def credentials(headers: dict) -> list[str]:
    """The credential values a call sends (and the token inside `Bearer <token>`)."""
    values = []
    for name, value in headers.items():
        if name.lower() in CREDENTIAL_HEADERS and isinstance(value, str):
            values += [value, value.split(" ", 1)[-1]]
    return values


def post(http: Upstreams, call: HttpCall, timeout: float, label: str, stream: bool = False) -> Response:
    """POST `call`; the response when its status is below 400, else the upstream error raised.

    `label` names the deployment in error messages; URLs and keys never appear in them. With
    `stream`, the body is left unread for the caller to iterate.
    """
    body = json.dumps(call.json, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    url = quote(call.url if not call.params else f"{call.url}?{urlencode(call.params)}", safe=URL_SAFE)
    try:
        response = http.post(url, body, {"Content-Type": "application/json", **call.headers}, timeout, stream)
    except TransportTimeout:
        raise UpstreamTimeout(f"Upstream {label} did not answer within {timeout:g}s") from None
    except TransportError as exc:
        raise UpstreamUnavailable(f"Upstream {label} is unreachable ({exc})") from None
    if response.status_code >= 400:
        try:
            raw = response.content
        except TransportError:
            raw = b""
        status = response.status_code
        message, error_type = error_details(raw, credentials(call.headers))
        raise UpstreamHTTPError(status, f"Upstream {label} returned HTTP {status}: {message}", error_type)
    return response


def send(http: Upstreams, call: HttpCall, timeout: float, label: str) -> tuple[dict, bytes]:
    """POST `call` and return the decoded JSON object and its raw bytes."""
    raw = post(http, call, timeout, label).content
    try:
        data = json.loads(raw)
    except ValueError:
        raise UpstreamBadResponse(f"Upstream {label} returned a body that is not JSON") from None
    if not isinstance(data, dict):
        raise UpstreamBadResponse(f"Upstream {label} returned JSON that is not an object")
    return data, raw


def error_details(raw: bytes, secrets: Iterable[str | None] = ()) -> tuple[str, str | None]:
    """The message and type of an upstream error body, whatever shape it has; credentials are taken
    out before it is cut to length, so no part of one survives the cut."""
    try:
        data: Any = json.loads(raw)
    except ValueError:
        text = redact(raw.decode("utf-8", "replace"), secrets).strip()
        return text[:MAX_ERROR_MESSAGE] or "(empty body)", None
    error = data.get("error", data) if isinstance(data, dict) else data
    error_type = error.get("type") if isinstance(error, dict) and isinstance(error.get("type"), str) else None
    message = error.get("message") or json.dumps(error) if isinstance(error, dict) else error
    return redact(str(message), secrets)[:MAX_ERROR_MESSAGE], error_type


def usage_from_openai(data: dict) -> Usage:
    """Normalize an OpenAI-style `usage` object (chat or embeddings)."""
    usage = data.get("usage") or {}
    if not isinstance(usage, dict):
        return Usage()
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        cached_tokens=_count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0,
        reasoning_tokens=_count(completion_details.get("reasoning_tokens"))
        if isinstance(completion_details, dict)
        else 0,
    )


def usage_from_responses(response: Any) -> Usage:
    """Normalize the `usage` of a Responses API `response` object: `input_tokens` (cached ones
    included, named again in `input_tokens_details.cached_tokens`) and `output_tokens` (reasoning
    included, named in `output_tokens_details.reasoning_tokens`)."""
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return Usage()
    input_details = usage.get("input_tokens_details")
    output_details = usage.get("output_tokens_details")
    return Usage(
        prompt_tokens=_count(usage.get("input_tokens")),
        completion_tokens=_count(usage.get("output_tokens")),
        cached_tokens=_count(input_details.get("cached_tokens")) if isinstance(input_details, dict) else 0,
        reasoning_tokens=_count(output_details.get("reasoning_tokens")) if isinstance(output_details, dict) else 0,
    )


def openai_usage(usage: Usage) -> dict:
    """The OpenAI `usage` object of a normalized `Usage`."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
