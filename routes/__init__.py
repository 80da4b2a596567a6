"""One Blueprint per surface: `llm` (chat, models), `customers`, `budgets`, `spend_logs`, `health`.

This module holds what every surface reads the same way: the JSON body and paging parameters.
"""

from __future__ import annotations

import json
import math
import re
import socket
import time
from collections.abc import Iterator

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from errors import BadRequest, ProxyError

# Bounds no legitimate client reaches: deeper JSON would exhaust the parser's recursion, and a
# page past a billion would overflow the database's row offset.
MAX_JSON_DEPTH = 64
MAX_PAGE = 1_000_000_000
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_body() -> dict:
    """The request body as a JSON object of valid Unicode, nested at most 64 deep; a 400 for anything else."""
    raw = read_body()
    if not raw.strip():
        raise BadRequest("Request body is empty: send a JSON object")
    try:
        body = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"Request body must be a JSON object, not a JSON {type(body).__name__}")
    _check_tree(body)
    return body


def read_body() -> bytes:
    """The raw request body, however it is framed: a 413 past `max_request_size_mb` (Content-Length
    or chunked alike), a 400 for broken chunked framing, a 408 when the client has not sent it
    all within `REQUEST_BODY_TIMEOUT` seconds of the headers."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    timeout = current_app.config["TOLLGATE_BODY_TIMEOUT"]
    if request.content_length is not None and request.content_length > limit:
        _discard(timeout, limit)
        raise RequestEntityTooLarge()
    parts, size = [], 0
    try:
        for chunk in _timed_chunks(timeout):
            size += len(chunk)
            if size > limit:
                _discard(timeout, limit)
                raise RequestEntityTooLarge()
            parts.append(chunk)
    except TimeoutError:
        _stop_reading()
        raise _body_timeout() from None
    except (RequestEntityTooLarge, ProxyError):
        raise
    except Exception as exc:  # the server's chunked-body parser: a bad chunk size, a missing terminator
        raise BadRequest(f"Request body framing is broken ({type(exc).__name__}); nothing was read") from None
    return b"".join(parts)


def _discard(timeout: float, most: int) -> None:
    """Read and drop up to `most` more bytes of a body refused for its size, so that the client,
    still sending, reads the 413 instead of a connection reset (a server that closes a socket with
    unread bytes in it resets the connection). A bigger body is left unread: its client gets a reset."""
    if not request.environ.get("wsgi.input_terminated"):
        return  # not under gunicorn: nothing is on a socket
    dropped = 0
    try:
        for chunk in _timed_chunks(timeout):
            dropped += len(chunk)
            if dropped > most:
                return
    except Exception:  # noqa: BLE001 - the body is refused whatever else goes wrong reading it
        return


def _timed_chunks(timeout: float) -> Iterator[bytes]:
    """The body in chunks, every read bounded by what is left of `timeout`. Under gunicorn the
    body is read from the connection's socket (`gunicorn.socket`), whose timeout bounds each read;
    gunicorn ends the stream at the body's end whatever its framing (`wsgi.input_terminated`)."""
    environ = request.environ
    stream = environ["wsgi.input"] if environ.get("wsgi.input_terminated") else request.stream
    sock = environ.get("gunicorn.socket")
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if sock is not None:
                sock.settimeout(left)
            chunk = stream.read(65536)
            if not chunk:
                return
            yield chunk
    finally:
        if sock is not None:
            sock.settimeout(None)


def _stop_reading() -> None:
    """After a body that stopped coming: the server reads no more of this connection, so it closes
    once the 408 is sent instead of waiting on it for the rest of the body (a kept-alive connection
    would first try to read what the body still owes)."""
    sock = request.environ.get("gunicorn.socket")
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass


def _body_timeout() -> ProxyError:
    return ProxyError(
        "Request body not received in time: the client stopped sending it", status=408, type="request_timeout"
    )


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is too large for a double-precision float")
    return value


def _check_tree(body: dict) -> None:
    """Walk the parsed body without recursion: nesting depth, and no lone UTF-16 surrogate (as in
    `"\\ud800"`), which no database or upstream can encode."""
    pending = [(body, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise _too_deep()
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            for text in (key, item):
                surrogate = _SURROGATE.search(text) if isinstance(text, str) else None
                if surrogate:
                    shown = ascii(surrogate.group())[1:-1]
                    raise BadRequest(
                        f"Request body holds a lone UTF-16 surrogate ({shown}), which is not valid Unicode"
                    )
            if isinstance(item, dict | list):
                pending.append((item, depth + 1))


def _too_deep() -> BadRequest:
    return BadRequest(f"Request body is nested too deeply: at most {MAX_JSON_DEPTH} levels of objects and arrays")


class Headers:
    """The request's headers with their values read as UTF-8, so that a customer id sent in a header
    is the same customer as the same id in the body. WSGI hands header bytes over as Latin-1
    text; bytes that are not UTF-8 (a client that encodes Latin-1, as Python's http.client does)
    are kept as Latin-1 text."""

    def __init__(self, headers):
        self._headers = headers

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self._headers.get(name)
        return default if value is None else wire_text(value)


def wire_text(value: str) -> str:
    """A header value as the client meant it: its bytes decoded as UTF-8 when they are UTF-8."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def text_arg(name: str, *aliases: str) -> str | None:
    """A text query parameter (or the first of its `aliases` that is set); None when absent or
    empty; a 400 when it holds a NUL character, which no database can match."""
    raw = next((request.args.get(key) for key in (name, *aliases) if request.args.get(key)), None)
    if raw is not None and "\x00" in raw:
        raise BadRequest(f"{name} must not contain NUL characters", param=name)
    return raw or None


def page_arg(name: str, default: int, maximum: int | None) -> int:
    """A whole-number query parameter within [1, maximum] (1 billion when None), in ASCII digits
    (`str.isdigit()` also takes "²" and "١"); a 400 naming it otherwise."""
    raw = request.args.get(name)
    if raw is None:
        return default
    maximum = maximum or MAX_PAGE
    digits = raw.strip()
    value = int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 10 else 0
    if value < 1 or value > maximum:
        limit = f"between 1 and {maximum}"
        raise BadRequest(f"{name} must be a whole number {limit}, got {raw!r}", param=name)
    return value
