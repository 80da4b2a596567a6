"""The total deadline of an upstream call, which nothing the upstream does can stretch.

A socket timeout, and so each of urllib3's, bounds one wait for bytes, and restarts with every
byte that arrives: an upstream that sends `100 Continue` every 200 ms, trickles its answer a byte
at a time or sends header fields without end can hold a call for ever (urllib3's
`Timeout(total=…)` only takes the time spent connecting off the read timeout). `Watch` ends every
call of its process that passes its deadline: its thread shuts down the call's socket, so
whatever urllib3 is waiting for ends at once, and `providers/http.py` raises TransportTimeout.

A call `begin`s and `end`s in its own thread, and in between reports where it is through
urllib3's and the standard library's public hooks, in the same thread: the pool classes'
`ConnectionCls` (`connect`, `request`, `getresponse`, `close`) and the TLS context's
`sslsocket_class` (`do_handshake`). The lock orders a shutdown before the connection's return to
its pool, so a socket is never shut down under another call.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

import urllib3

TICK = 0.05  # how late past its deadline a call may end, at most
IDLE = 10.0  # the thread ends after this long without calls (and starts again with the next one)


class Attempt:
    """One call in flight: its deadline, and the connection and socket it is on."""

    __slots__ = ("deadline", "connection", "sock", "reading", "expired", "cut")

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.connection: urllib3.connection.HTTPConnection | None = None  # connecting or sending
        self.sock: socket.socket | None = None  # in a TLS handshake, or read from
        self.reading = False  # the answer is being read: its socket stays watched if the connection lets go
        self.expired = False  # the deadline passed before the call ended
        self.cut = False  # ... and the call's socket was shut down


class Watch:
    """The calls in flight of one process, and the thread that ends those past their deadline."""

    def __init__(self):
        self._lock = threading.Lock()
        self._attempts: set[Attempt] = set()
        self._local = threading.local()  # each thread's attempt
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def begin(self, seconds: float) -> Attempt:
        """The calling thread starts a call that must end within `seconds`."""
        attempt = Attempt(time.monotonic() + seconds)
        self._local.attempt = attempt
        with self._lock:
            self._attempts.add(attempt)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tollgate-deadlines", daemon=True)
                self._thread.start()
        if not self._wake.is_set():  # under load the thread is awake already: no notify
            self._wake.set()
        return attempt

    def end(self, attempt: Attempt) -> None:
        """The call is over (its answer in hand, or failed): nothing of it is shut down any more."""
        self._local.attempt = None
        with self._lock:
            self._attempts.discard(attempt)
            attempt.connection = attempt.sock = None

    def sending(self, connection: urllib3.connection.HTTPConnection) -> None:
        """The call connects or sends on `connection` (whose socket may not exist yet)."""
        attempt = self._current()
        if attempt is not None:
            with self._lock:
                _check(attempt)
                attempt.connection = connection

    def handshaking(self, sock: ssl.SSLSocket) -> None:
        """The call's new connection starts its TLS handshake on `sock`."""
        attempt = self._current()
        if attempt is not None:
            with self._lock:
                _check(attempt)
                attempt.sock = sock

    def reading(self, connection: urllib3.connection.HTTPConnection) -> None:
        """The call reads its answer from `connection`."""
        attempt = self._current()
        if attempt is not None:
            with self._lock:
                _check(attempt)
                attempt.connection, attempt.sock, attempt.reading = connection, connection.sock, True

    def done(self) -> None:
        """The call has its answer (for a stream, its status and header fields)."""
        attempt = self._current()
        if attempt is not None:
            with self._lock:
                attempt.connection, attempt.sock, attempt.reading = None, None, False

    def closing(self, connection: urllib3.connection.HTTPConnection) -> None:
        """`connection` closes (an answer being read from its socket stays watched until `done`)."""
        attempt = self._current()
        if attempt is not None:
            with self._lock:
                if attempt.connection is connection:
                    attempt.connection = None
                    if not attempt.reading:
                        attempt.sock = None

    def _current(self) -> Attempt | None:
        return getattr(self._local, "attempt", None)

    def _run(self) -> None:
        while True:
            self._wake.clear()
            with self._lock:
                now = time.monotonic()
                for attempt in [attempt for attempt in self._attempts if attempt.deadline <= now]:
                    self._expire(attempt)
                earliest = min((attempt.deadline for attempt in self._attempts), default=None)
            if earliest is not None:
                time.sleep(min(max(earliest - now, 0.0), TICK))
            elif not self._wake.wait(IDLE):
                with self._lock:
                    if not self._attempts:
                        self._thread = None
                        return

    def _expire(self, attempt: Attempt) -> None:
        self._attempts.discard(attempt)
        attempt.expired = True
        sock = attempt.sock or (attempt.connection.sock if attempt.connection is not None else None)
        if sock is not None:
            attempt.cut = True
            _shut(sock)


def _check(attempt: Attempt) -> None:
    """A call past its deadline that had nothing to shut down yet stops at its next step."""
    if attempt.expired:
        raise TimeoutError("the call's deadline has passed")


def _shut(sock) -> None:
    """End every wait on `sock` now: its TCP connection, under TLS too."""
    sock = getattr(sock, "socket", sock)  # urllib3's TLS-in-TLS wrapper keeps the socket here
    if isinstance(sock, socket.socket):
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # TCP only: the TLS layer stays as it is
        except OSError:
            pass  # closed meanwhile


def pool_classes(watch: Watch) -> dict[str, type[urllib3.HTTPConnectionPool]]:
    """urllib3's pool classes by scheme (`PoolManager.pool_classes_by_scheme`), with connections
    that tell `watch` where their call is."""

    class Connection(urllib3.connection.HTTPConnection):
        def connect(self) -> None:
            watch.sending(self)
            super().connect()

        def request(self, *args, **kwargs) -> None:
            watch.sending(self)
            super().request(*args, **kwargs)

        def getresponse(self):
            watch.reading(self)
            try:
                return super().getresponse()  # with the whole body, unless streamed
            finally:
                watch.done()

        def close(self) -> None:
            watch.closing(self)
            super().close()

    class TLSConnection(Connection, urllib3.connection.HTTPSConnection):
        pass

    class Pool(urllib3.HTTPConnectionPool):
        ConnectionCls = Connection

    class TLSPool(urllib3.HTTPSConnectionPool):
        ConnectionCls = TLSConnection

    return {"http": Pool, "https": TLSPool}


def tls_context(watch: Watch) -> ssl.SSLContext:
    """The system's trusted certificates and host-name checks (`ssl.create_default_context`),
    with TLS sockets that tell `watch` when their handshake starts."""

    class TLSSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            watch.handshaking(self)
            super().do_handshake(block)

    context = ssl.create_default_context()
    context.sslsocket_class = TLSSocket
    return context
