"""Tollgate's gunicorn worker: gunicorn's gthread worker plus what only the server can do.

Slow request headers. gthread reads a request's line and headers in a pool thread, from a
blocking socket without a deadline once the first byte has come: 1,300 clients that send half a
request would hold every thread of the box. Here a watch thread per worker answers 408 (in the
OpenAI envelope) and closes each connection that has not sent its whole request line and headers
within `REQUEST_HEADER_TIMEOUT` seconds (default 10) of a pool thread taking it up; the thread is
free again at once. (A connection that sends nothing is gthread's own business: it goes back to
the poller after 5 s and is closed after `keepalive` seconds.) The deadline on the body
(`REQUEST_BODY_TIMEOUT`) is the app's: routes.read_body.

gunicorn's own refusals (a malformed request line, a URI over 4,094 bytes: 414, header fields too
large: 431, a transfer coding it does not support: 501, ...) are written in the OpenAI error
envelope instead of gunicorn's HTML page, with gunicorn's status and message. Errors that are not
the client's stay gunicorn's (the app's own 500s are enveloped by errors.py before they get here).
"""

from __future__ import annotations

import http
import json
import socket
import threading
import time

from gunicorn.http.errors import (
    ConfigurationProblem,
    ExpectationFailed,
    ForbiddenProxyRequest,
    InvalidResponseHeader,
    InvalidResponseHeaderName,
    LimitRequestHeaders,
    LimitRequestLine,
    ParseException,
    UnsupportedTransferCoding,
)
from gunicorn.workers.gthread import ThreadWorker

from errors import error_body
from thread_names import HEADER_WATCH, name_this_thread

# gunicorn's statuses for the parse errors that are not a plain 400.
STATUSES = (
    (LimitRequestLine, 414),
    (LimitRequestHeaders, 431),
    (UnsupportedTransferCoding, 501),
    (ExpectationFailed, 417),
    (ForbiddenProxyRequest, 403),
)
MAX_MESSAGE = 200  # a refused request line can be kilobytes long: its echo is cut


class Worker(ThreadWorker):
    """gthread with a header deadline and enveloped refusals (the Procfile's `worker_class`)."""

    def run(self):
        self.header_watch = HeaderWatch(self.wsgi.extensions["tollgate"].config.request_header_timeout)
        self.header_watch.start()
        try:
            super().run()
        finally:
            self.header_watch.stop()

    def handle(self, conn):
        # A kept-alive connection reaches here when its next request has begun, a new one when it
        # connects (gthread waits 5 s for its first byte before handing it back to the poller).
        self.header_watch.watch(conn)
        try:
            return super().handle(conn)
        finally:
            self.header_watch.forget(conn)

    def handle_request(self, req, conn):
        if not self.header_watch.forget(conn):
            return False  # answered 408 as the headers completed: the connection is closed
        return super().handle_request(req, conn)

    def handle_error(self, req, client, addr, exc):
        status = client_status(exc)
        if status is None:
            return super().handle_error(req, client, addr, exc)
        self.log.warning("Invalid request from ip=%s: %s", (addr or ("-",))[0], exc)
        send_error(client, status, str(exc)[:MAX_MESSAGE] or http.HTTPStatus(status).phrase)
        return None


def client_status(exc: BaseException) -> int | None:
    """The status gunicorn answers a malformed request with; None when the fault is not the client's."""
    if not isinstance(exc, ParseException) or isinstance(
        exc, ConfigurationProblem | InvalidResponseHeader | InvalidResponseHeaderName
    ):
        return None
    return next((status for kind, status in STATUSES if isinstance(exc, kind)), 400)


def send_error(sock: socket.socket, status: int, message: str) -> None:
    """Write a whole error response in the OpenAI envelope and mark the connection for closing."""
    kind = "request_timeout" if status == 408 else "invalid_request_error"
    body = json.dumps(error_body(status, message, kind)).encode()
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    try:
        sock.sendall(head.encode("ascii") + body)
    except OSError:
        pass  # the client has gone


class HeaderWatch:
    """Connections whose request line and headers are due, each with its deadline; a thread answers
    408 and shuts down those past it, which ends the pool thread's blocked read at once."""

    TICK = 0.25

    def __init__(self, timeout: float):
        self.timeout = timeout
        self._due: dict[int, tuple[float, object]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=HEADER_WATCH, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def watch(self, conn) -> None:
        with self._lock:
            self._due.setdefault(id(conn), (time.monotonic() + self.timeout, conn))

    def forget(self, conn) -> bool:
        """Stop watching `conn`; False when its deadline had already passed (it was answered 408)."""
        with self._lock:
            return self._due.pop(id(conn), None) is not None

    def _run(self) -> None:
        name_this_thread(HEADER_WATCH)
        while not self._stopping.wait(self.TICK):
            for conn in self._expired(time.monotonic()):
                send_error(conn.sock, 408, f"Request headers not received within {self.timeout:g} seconds")
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _expired(self, now: float) -> list:
        with self._lock:
            late = [key for key, (deadline, _) in self._due.items() if deadline <= now]
            return [self._due.pop(key)[1] for key in late]
