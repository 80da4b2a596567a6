"""Hostile and malformed requests for the chaos bench (`bench/chaos.py`): each is sent as raw bytes
on its own connection, so the bench can send what no HTTP library would (broken framing, invalid
UTF-8, a request line of garbage) and read whatever the server answers.

Every request here is bad input Tollgate itself judges: the server must answer it with a 4xx (or
close the connection while refusing it), never a 5xx. Left out on purpose: an unsupported
transfer coding, where HTTP (RFC 9112 §6.1) asks for 501, which is not the server failing; and
values only the upstream judges (a negative `max_tokens` is forwarded as LiteLLM forwards it,
so its answer is the upstream's, faults included).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

from bench.common import MASTER_KEY, MODEL

ANSWER_TIMEOUT = 60.0
LIMIT = 10 * 1024 * 1024  # max_request_size_mb's default, 10
CHUNK = 65536
CALL = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def head(method: str, path: str, length: int | None = None, **headers: str) -> bytes:
    """A request's line and headers (the master key, `Connection: close`, a JSON content type)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {MASTER_KEY}"]
    lines += ["Content-Type: application/json", "Connection: close"]
    lines += [] if length is None else [f"Content-Length: {length}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def post(path: str, body: bytes) -> bytes:
    return head("POST", path, len(body)) + body


def get(path: str) -> bytes:
    return head("GET", path)


def call(**fields) -> bytes:
    """A chat completion with `fields` replacing or adding to a valid call's."""
    return post("/chat/completions", json.dumps({**CALL, **fields}).encode())


def raw_call(rest: bytes) -> bytes:
    """A chat completion whose JSON body is `{"model": "bench-model", ` followed by `rest` as given."""
    return post("/chat/completions", b'{"model": "' + MODEL.encode() + b'", ' + rest)


def chunked(body: bytes, size: int = CHUNK) -> bytes:
    parts = [
        f"{len(body[i : i + size]):x}\r\n".encode() + body[i : i + size] + b"\r\n" for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


def oversized_chunked() -> bytes:
    body = b'{"model": "' + MODEL.encode() + b'", "pad": "' + b"a" * (LIMIT + CHUNK) + b'"}'
    return head("POST", "/chat/completions", Transfer_Encoding="chunked") + chunked(body)


def deep_nesting() -> bytes:
    depth = 100_000
    return raw_call(b'"messages": ' + b"[" * depth + b"]" * depth + b"}")


# name -> the bytes of the request; built when sent, so the big ones are not held in memory.
KINDS: dict[str, Callable[[], bytes]] = {
    "malformed JSON": lambda: raw_call(b'"messages": ['),
    "deep nesting": deep_nesting,
    "number past a double": lambda: raw_call(b'"messages": [], "temperature": 1e999}'),
    "integer of 5,000 digits": lambda: raw_call(b'"messages": [], "max_tokens": ' + b"9" * 5000 + b"}"),
    "NaN literal": lambda: raw_call(b'"messages": [], "temperature": NaN}'),
    "lone surrogate in user": lambda: raw_call(b'"messages": [], "user": "\\ud800"}'),
    "lone surrogate in customer": lambda: post("/customer/new", b'{"user_id": "\\udfff"}'),
    "invalid UTF-8": lambda: raw_call(b'"messages": [], "user": "\xff\xfe"}'),
    "bad chunk size": lambda: head("POST", "/chat/completions", Transfer_Encoding="chunked") + b"zz\r\n{}\r\n0\r\n\r\n",
    "oversized chunked body": oversized_chunked,
    "declared length over the limit": lambda: head("POST", "/chat/completions", LIMIT + 1),
    "body a JSON array": lambda: post("/chat/completions", b"[1, 2, 3]"),
    "messages not a list": lambda: call(messages="hello"),
    "stream not a boolean": lambda: call(stream="yes"),
    "unknown model": lambda: call(model="no-such-model"),
    "customer id of 300 characters": lambda: call(user="c" * 300),
    "NUL in customer id": lambda: call(user="a\x00b"),
    "budget past a double": lambda: post("/customer/new", b'{"user_id": "hostile", "max_budget": 1e400}'),
    "duration past a century": lambda: post(
        "/customer/new", b'{"user_id": "hostile", "budget_duration": "99999999999d"}'
    ),
    "reset time past the calendar": lambda: post(
        "/customer/new", b'{"user_id": "hostile", "budget_duration": "1mo", "budget_reset_at": "9999-12-31T23:59:59Z"}'
    ),
    "budget tier with a bad duration": lambda: post(
        "/budget/new", b'{"budget_id": "hostile", "budget_duration": "1x"}'
    ),
    "bad date on /spend/logs": lambda: get("/spend/logs?start_date=2026-13-45"),
    "date past the calendar on /spend/logs": lambda: get("/spend/logs?end_date=99999-01-01"),
    "end before start on daily activity": lambda: get(
        "/customer/daily/activity?start_date=2026-12-05&end_date=2026-01-01"
    ),
    "bad date on daily activity": lambda: get("/customer/daily/activity?start_date=yesterday"),
    "lone surrogate in a query": lambda: get("/customer/info?end_user_id=%ED%A0%80"),
    "page of 20 digits": lambda: get("/customer/list?page=99999999999999999999"),
    "bad time on global spend": lambda: post("/global/spend/end_users", b'{"startTime": "not-a-date"}'),
    "wrong key": lambda: head("GET", "/customer/list").replace(MASTER_KEY.encode(), b"sk-wrong"),
    "request line of garbage": lambda: b"GARBAGE\r\n\r\n",
    "URI too long": lambda: b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header too large": lambda: b"GET /health/liveliness HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    "header name with a space": lambda: b"GET /health/liveliness HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n",
}


def send(port: int, kind: str) -> int | str:
    """Send one request of `kind` on a new connection: the status answered, or what happened instead
    ("reset" when the server closed while refusing it, "no answer" …)."""
    data = KINDS[kind]()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT) as sock:
            try:
                sock.sendall(data)
            except OSError:
                pass  # refused before it was all sent (413): the answer may still be there to read
            return status_of(read_answer(sock))
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        return "no answer (timeout)"
    except OSError as exc:
        return f"no answer ({type(exc).__name__})"


def read_answer(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection or its head is in (enough for the status)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
        if b"\r\n\r\n" in received:
            break
    return received


def status_of(answer: bytes) -> int | str:
    if not answer.startswith(b"HTTP/"):
        return "closed without an answer"
    return int(answer.split(b" ", 2)[1])
