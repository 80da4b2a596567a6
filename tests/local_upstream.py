"""A real HTTP server on 127.0.0.1 that answers as each test registers, and records what it got.

Its registration API is the part of `responses`' the tests use: `post(url, json=…, status=…,
body=…, content_type=…, headers=…, params=…)`, `replace(…)`, and `calls[i].request` with its
`url`, `headers` and `body`. Like `responses` with `assert_all_requests_are_fired`, every
registered answer must be used by the end of the test; of several registered for the same request,
the first is used once and dropped. A request nothing was registered for gets its connection
closed without an answer, which the proxy sees as an unreachable upstream.

Tests reach it through `Upstreams(resolve=upstream.resolve)`: calls to any host other than
127.0.0.1 or localhost are connected here instead, keeping their `Host` header; the server
listens twice, so it knows whether the call was meant for `https` or `http`.
"""

from __future__ import annotations

import json as jsonlib
import sys
import threading
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from providers.http import Upstreams

LOOPBACK = ("127.0.0.1", "localhost")


@dataclass
class Request:
    method: str
    url: str
    headers: Message
    body: bytes
    target: str  # the request line's target: a path, or the absolute URL a proxy is sent
    peer: tuple[str, int]  # the client's address: one per connection


@dataclass
class Call:
    request: Request


@dataclass
class Registered:
    method: str
    host: str
    path: str
    status: int
    body: bytes
    headers: dict
    params: dict | None = None
    calls: int = 0

    def matches(self, method: str, host: str, path: str, query: dict) -> bool:
        if (method, host, path) != (self.method, self.host, self.path):
            return False
        return self.params is None or query == self.params


@dataclass
class LocalUpstream:
    registered: list[Registered] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)

    idle_timeout: float | None = None  # hang up on connections idle this long

    def __post_init__(self):
        self._lock = threading.Lock()
        self._servers = {scheme: self._server(scheme) for scheme in ("http", "https")}

    # -- registering, as `responses` does ----------------------------------------------------

    def post(self, url: str, **answer) -> None:
        self.add("POST", url, **answer)

    def add(self, method: str, url: str, *, json=None, body=b"", status=200, content_type=None, headers=None,
            params=None) -> None:  # fmt: skip
        parts = urlsplit(url)
        if json is not None:
            body, content_type = jsonlib.dumps(json).encode(), content_type or "application/json"
        elif isinstance(body, str):
            body = body.encode()
        sent = {"Content-Type": content_type or "text/plain", **(headers or {})}
        with self._lock:
            self.registered.append(Registered(method, parts.netloc, parts.path, status, body, sent, params))

    def replace(self, method: str, url: str, **answer) -> None:
        """Replace the first answer registered for `method` and `url`."""
        parts = urlsplit(url)
        wanted = (method, parts.netloc, parts.path)
        with self._lock:
            keys = [(entry.method, entry.host, entry.path) for entry in self.registered]
            index = keys.index(wanted)
            del self.registered[index]
        self.add(method, url, **answer)
        with self._lock:
            self.registered.insert(index, self.registered.pop())

    # -- wiring ----------------------------------------------------------------------------

    def resolve(self, scheme: str, host: str, port: int) -> tuple[str, str, int]:
        if host in LOOPBACK:
            return scheme, host, port
        return "http", "127.0.0.1", self._servers[scheme].server_port

    def transport(self) -> Upstreams:
        return Upstreams(resolve=self.resolve)

    def port(self, scheme: str) -> int:
        return self._servers[scheme].server_port

    def stop(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()

    def unfired(self) -> list[str]:
        return [f"{entry.method} {entry.host}{entry.path}" for entry in self.registered if entry.calls == 0]

    # -- serving ---------------------------------------------------------------------------

    def _answer(self, scheme: str, handler: BaseHTTPRequestHandler) -> Registered | None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        host = handler.headers.get("Host", "")
        parts = urlsplit(handler.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        url = f"{scheme}://{host}{parts.path}" + (f"?{parts.query}" if parts.query else "")
        with self._lock:
            sent = Request(handler.command, url, handler.headers, body, handler.path, handler.client_address)
            self.calls.append(Call(sent))
            found = [entry for entry in self.registered if entry.matches(handler.command, host, parts.path, query)]
            if not found:
                return None
            if len(found) > 1:
                self.registered.remove(found[0])
            found[0].calls += 1
            return found[0]

    def _server(self, scheme: str) -> ThreadingHTTPServer:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                self.timeout = upstream.idle_timeout
                super().setup()

            def do_POST(self):
                entry = upstream._answer(scheme, self)
                if entry is None:
                    self.close_connection = True
                    return
                self.send_response(entry.status)
                for name, value in entry.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(entry.body)))
                self.end_headers()
                self.wfile.write(entry.body)

            do_GET = do_POST

            def log_message(self, *args):
                pass

        server = _Server(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        return server


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that hangs up or resets its connection is no error of the server's."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)
