"""How a serving process stops: the SIGTERM drain (SPEC §11; gunicorn.conf.py wires it).

When gunicorn's master is told to stop, it signals every worker. A worker then drains: it keeps
accepting connections, answers every new request at once with 503 (readiness says "draining"),
lets the calls already in flight finish and be charged, and only then lets gunicorn stop it. A
worker that simply stopped accepting would leave new connections waiting in the listen queue of a
socket nobody serves any more, until the last in-flight call ended.

A worker is also sent SIGTERM when it is being replaced while the server goes on: by a reload
(`kill -HUP`, whose new workers are already serving) or a smaller worker count (`kill -TTOU`).
Such a worker must not answer 503 to what reaches it meanwhile: it stops as gunicorn stops it
(no new connections; its in-flight calls finish). The master tells the two apart by moving a
generation counter, in memory its forked workers share, before it replaces workers; a worker whose
birth generation is behind is being replaced.

`Lifecycle` (one per app) counts the requests in flight (a WSGI wrapper, so a stream counts until
its last chunk is sent or its client leaves), holds the draining flag and the generation counter.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Iterable

from werkzeug.wsgi import ClosingIterator

from thread_names import DRAIN, name_this_thread

IDLE_POLL_SECONDS = 0.05


class Lifecycle:
    def __init__(self):
        self._draining = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0
        # Made in the master before any fork, so every worker of this app sees the same counter.
        self._generation = multiprocessing.RawValue("L", 0)
        self._born = 0

    def mark_born(self) -> None:
        """In a new worker (gunicorn's post_fork): remember the generation it starts in."""
        self._born = self._generation.value

    def replace_workers(self) -> None:
        """In the master, before it replaces the workers running this app (reload, fewer workers)."""
        self._generation.value += 1

    @property
    def replaced(self) -> bool:
        """Whether the master has begun replacing this worker (so a SIGTERM is no server stop)."""
        return self._generation.value != self._born

    def drain_on_sigterm(self, stop: Callable[[int, object], None], grace_seconds: float) -> None:
        """Install this worker's SIGTERM handler (gunicorn's post_worker_init, main thread).

        Being replaced, the worker stops at once as gunicorn stops it (`stop`, gunicorn's own
        handler). The server stopping, it drains: 503 to every new request, and `stop` once no
        request is in flight any more, or after `grace_seconds`. The handler only sets flags: the
        wait runs in a thread started here, since a signal handler must not block (under gevent it
        runs in the event loop itself).
        """
        stopping = threading.Event()

        def on_sigterm(signum: int, frame: object) -> None:
            if self.replaced:
                stop(signum, frame)
            elif not self.draining:
                self.begin_drain()
                stopping.set()

        def finish() -> None:
            name_this_thread(DRAIN)
            stopping.wait()
            self.wait_idle(grace_seconds)
            stop(signal.SIGTERM, None)

        threading.Thread(target=finish, name=DRAIN, daemon=True).start()
        signal.signal(signal.SIGTERM, on_sigterm)

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def begin_drain(self) -> None:
        """From now on new requests are refused with 503."""
        self._draining.set()

    def wait_idle(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> bool:
        """Wait until no request is in flight, at most `timeout` seconds; whether it got there."""
        deadline = clock() + timeout
        while self._in_flight > 0:
            if clock() >= deadline:
                return False
            time.sleep(IDLE_POLL_SECONDS)
        return True

    def track(self, wsgi_app: Callable) -> Callable:
        """`wsgi_app` counted: a request is in flight from its start until its body is closed."""

        def counted(environ: dict, start_response: Callable) -> Iterable[bytes]:
            self._add(1)
            try:
                body = wsgi_app(environ, start_response)
            except BaseException:
                self._add(-1)
                raise
            return ClosingIterator(body, [lambda: self._add(-1)])

        return counted

    def _add(self, delta: int) -> None:
        with self._lock:
            self._in_flight += delta
