"""Tollgate's gunicorn workers: gunicorn's gevent worker (the default, `gevent_worker()`) and its
gthread worker (`Worker`, with TOLLGATE_WORKER=gthread), each plus what only the server can do.

Slow request headers get a deadline: a client that has begun a request and not sent its whole
request line and headers within `REQUEST_HEADER_TIMEOUT` seconds (default 10) gets 408 in the
OpenAI envelope and its connection is closed. Under gevent the deadline runs from the request's
first byte (a greenlet waits for that byte, up to `keepalive` seconds, and an idle connection
closes quietly; a kept-alive one at once when the worker stops). Under gthread, where a pool thread reads the
headers from a blocking socket with no deadline of gunicorn's, a watch thread per worker answers
408 and shuts the connection down, `REQUEST_HEADER_TIMEOUT` seconds after a pool thread took it up,
unless bytes are waiting to be read (then the worker, not the client, is behind). The deadline on
the body (`REQUEST_BODY_TIMEOUT`) is the app's: routes.read_body.

gunicorn's own refusals (a malformed request line, a URI over 4,094 bytes: 414, header fields too
large: 431, a transfer coding it does not support: 501, ...) are written in the OpenAI error
envelope instead of gunicorn's HTML page, with gunicorn's status and message; what the client
still sends is read before the connection closes, so it reads the answer rather than a reset.
Errors that are not the client's stay gunicorn's (the app's own 500s are enveloped by errors.py).
"""

from __future__ import annotations

import http
import json
import select
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


class HeaderTimeout(ParseException):
    """The client began a request and did not finish its line and headers in time (gevent)."""

    def __init__(self, seconds: float):
        super().__init__(f"Request headers not received within {seconds:g} seconds")


# gunicorn's statuses for the parse errors that are not a plain 400, and the header deadline's.
STATUSES = (
    (HeaderTimeout, 408),
    (LimitRequestLine, 414),
    (LimitRequestHeaders, 431),
    (UnsupportedTransferCoding, 501),
    (ExpectationFailed, 417),
    (ForbiddenProxyRequest, 403),
)
MAX_MESSAGE = 200  # a refused request line can be kilobytes long: its echo is cut


class Worker(ThreadWorker):
    """gthread with a header deadline and enveloped refusals (TOLLGATE_WORKER=gthread)."""

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
        if not refuse(self.log, client, addr, exc):
            super().handle_error(req, client, addr, exc)


def refuse(log, client: socket.socket, addr, exc: BaseException) -> bool:
    """Answer a request gunicorn refused because of the client in the OpenAI envelope (logged as
    gunicorn logs it) and read what the client still sends; False when the fault is not the client's."""
    status = client_status(exc)
    if status is None:
        return False
    log.warning("Invalid request from ip=%s: %s", (addr or ("-",))[0], exc)
    send_error(client, status, str(exc)[:MAX_MESSAGE] or http.HTTPStatus(status).phrase)
    linger(client)
    return True


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
        """The connections past their deadline whose client is the slow one: one with bytes waiting
        to be read is waiting for this worker (its threads busy), and gets another period."""
        with self._lock:
            late = [(key, conn) for key, (deadline, conn) in self._due.items() if deadline <= now]
        expired = []
        for key, conn in late:
            waiting = _readable(conn.sock)
            with self._lock:
                if key not in self._due:
                    continue  # its headers came meanwhile
                if waiting:
                    self._due[key] = (now + self.timeout, conn)
                else:
                    expired.append(self._due.pop(key)[1])
        return expired


def _readable(sock) -> bool:
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return False


def gevent_worker():
    """The gevent worker class (imported only when it is the one configured: gevent is then loaded)."""
    import gevent
    from gevent import socket as green_socket
    from gevent.local import local
    from gunicorn.workers.ggevent import GeventWorker

    class Worker(GeventWorker):
        """gunicorn's gevent worker with a header deadline and enveloped refusals.

        A connection waits for the first byte of its next request for up to `keepalive` seconds
        (then it closes quietly, as an idle kept-alive connection does); from that byte the request
        line and headers are due within `REQUEST_HEADER_TIMEOUT` seconds, or the client gets 408."""

        def init_process(self):
            self.current = local()
            super().init_process()

        def handle(self, listener, client, addr):
            self.current.client, self.current.fresh = client, True
            super().handle(listener, client, addr)

        def timeout_ctx(self):
            header_timeout = self.wsgi.extensions["tollgate"].config.request_header_timeout
            fresh, self.current.fresh = self.current.fresh, False
            if not self._request_begun(self.current.client, fresh):
                return gevent.Timeout(0.001, False)  # idle: the connection closes without an answer
            return gevent.Timeout(header_timeout, HeaderTimeout(header_timeout))

        def _request_begun(self, client, fresh: bool) -> bool:
            """Wait for the first byte of the next request: False after `keepalive` seconds without
            one. A kept-alive connection with nothing sent also closes as soon as the worker stops
            (it must not hold the worker); a new one keeps its time, as its client connected to send."""
            deadline = time.monotonic() + self.cfg.keepalive
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not (fresh or self.alive or _readable(client)):
                    return False
                try:
                    green_socket.wait_read(client.fileno(), timeout=min(left, 1.0))
                    return True
                except TimeoutError:
                    continue
                except OSError:
                    return False

        def handle_error(self, req, client, addr, exc):
            if not refuse(self.log, client, addr, exc):
                super().handle_error(req, client, addr, exc)

    return Worker


def linger(sock: socket.socket, most: int = 1 << 20, seconds: float = 1.0) -> None:
    """Close the sending side and read what the client still sends (up to `most` bytes, for at most
    `seconds`), so that it reads the answer before the connection closes instead of a reset."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(seconds)
        dropped = 0
        while dropped < most and (chunk := sock.recv(65536)):
            dropped += len(chunk)
    except OSError:
        pass
