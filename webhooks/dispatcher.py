"""Delivers webhook events: one background thread per worker process.

Events are rows of the outbox (`spend.store.Outbox`), written in the transaction of the charge
they describe. The thread claims due events with a lease (on PostgreSQL skipping rows another
box is claiming at that moment), so each event is posted by one worker at a time while every
worker of every box delivers. It POSTs each as JSON on a kept-open connection, with Standard
Webhooks signature headers when `WEBHOOK_SECRET` is set, and records the outcome. Any 2xx is
delivered; anything else is retried with exponential backoff and jitter (1 s, 2 s, 4 s … capped
at `WEBHOOK_RETRY_MAX_SECONDS`, default 30 min) until the event's 24-hour retry window has
passed, then it is marked dead and stays listed for the operator. Delivered events are kept for
`WEBHOOK_RETENTION_DAYS` (default 7) after delivery, then deleted (each worker looks every
PURGE_SECONDS); pending and dead events are never deleted. Delivery is at least once; receivers
de-duplicate on `event_id` (also the `webhook-id` header). Events go out in the order they were
written; after a failed post the rest of the round waits, so a customer's events stay in order
unless a failed event is overtaken by newer ones while it waits for its retry.

The request path never waits for any of this: it only inserts rows and wakes the thread.

Delivery keeps out of the calls' way. A worker that is serving calls (a request started or a
call was charged in the last SERVING_SECONDS) leaves new events to a worker that is not, for
HANDOFF_SECONDS, and takes only the ones nobody took by then. A quiet worker delivers at once
what is due, and while events keep coming it looks again every FLOW_SECONDS, so they go out in
small steady claims rather than one burst per poll. A dispatcher that finds nothing due takes no
write lock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import random
import threading
import time
from collections.abc import Callable

from providers.http import TransportError, Upstreams
from spend.store import OutboxEvent, Store, StoreUnavailable
from thread_names import DELIVERY, name_this_thread

log = logging.getLogger("tollgate.webhooks")

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
LEASE_SECONDS = CONNECT_TIMEOUT + READ_TIMEOUT + 10.0  # longer than one post can take
BATCH = 100
COALESCE_SECONDS = 0.05
FLOW_SECONDS = 0.1  # how soon a quiet worker that just delivered events looks for more
SERVING_SECONDS = 0.5  # a worker that took a request this recently is serving calls
HANDOFF_SECONDS = 2.0  # how long a serving worker leaves new events to the others
PURGE_SECONDS = 600.0  # how often each worker deletes delivered events past their retention
PURGE_BATCH = 1000  # events deleted per transaction, so write transactions stay short


def signature_headers(secret: str, event_id: str, timestamp: int, body: str) -> dict:
    """Standard Webhooks: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body` (`whsec_` keys are base64)."""
    key = base64.b64decode(secret[len("whsec_") :]) if secret.startswith("whsec_") else secret.encode()
    signed = f"{event_id}.{timestamp}.{body}".encode()
    digest = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {"webhook-id": event_id, "webhook-timestamp": str(timestamp), "webhook-signature": f"v1,{digest}"}


def backoff(attempts: int, ceiling: float, rng: random.Random) -> float:
    """Seconds before the next try after `attempts` failures: doubling, capped, with ±50% jitter."""
    return min(2.0 ** max(attempts - 1, 0), ceiling) * (0.5 + rng.random())


class Dispatcher:
    def __init__(
        self,
        store: Store,
        url: str,
        secret: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        poll_seconds: float = 1.0,
        max_backoff: float = 1800.0,
        retention_seconds: float = 7 * 86_400.0,
        on_failure: Callable[[], None] | None = None,
    ):
        self.outbox, self.url, self.secret = store.outbox, url, secret
        self.on_failure = on_failure  # told of every failed post (the metrics count them)
        self.clock, self.poll_seconds, self.max_backoff = clock, poll_seconds, max_backoff
        self.retention_seconds = retention_seconds
        self._next_purge = 0.0  # time.monotonic() of the next purge: the first round does one
        self._rng = random.Random()
        self._wake = threading.Event()
        self._last_request = -SERVING_SECONDS  # time.monotonic() of this process's last request
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self._pid: int | None = None
        # Kept-open connections pooled per worker process, as for calls to upstreams (used by the
        # delivery thread, and by request threads for the test event of GET /health/services).
        self._http = Upstreams()

    def start(self) -> None:
        """Start the thread in this process, once (a thread does not survive fork; it restarts)."""
        with self._starting:  # a process's first requests may arrive together
            if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
                return
            self._pid, self._stop = os.getpid(), threading.Event()
            self._thread = threading.Thread(target=self._run, name=DELIVERY, daemon=True)
            self._thread.start()

    def request_started(self) -> None:
        """Before each request of this process: it is serving; the thread runs (started here in a
        process that gunicorn's post_fork did not start it in, as under another server)."""
        self._last_request = time.monotonic()
        if self._pid != os.getpid():
            self.start()

    def wake(self) -> None:
        """A call in this process wrote events: deliver them soon, from here if nobody else does.
        Under load the thread is awake already; setting the event again would cost every call a
        condition variable's lock and notify."""
        self._last_request = time.monotonic()
        if not self._wake.is_set():
            self._wake.set()

    def serving(self) -> bool:
        """Whether this process is serving requests (one started or charged in the last SERVING_SECONDS)."""
        return time.monotonic() - self._last_request < SERVING_SECONDS

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the event in hand and stop; undelivered events stay in the outbox."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._pid == os.getpid():
            self._thread.join(timeout)

    def _run(self) -> None:
        name_this_thread(DELIVERY)
        while not self._stop.is_set():
            if time.monotonic() >= self._next_purge:
                self._next_purge = time.monotonic() + PURGE_SECONDS
                try:
                    self.purge()
                except Exception:
                    log.exception("webhook dispatcher: could not delete old delivered events; retrying later")
            serving = self.serving()
            try:
                delivered = self.deliver_due(HANDOFF_SECONDS if serving else 0.0)
            except StoreUnavailable as exc:  # a known outage: one line, as the calls log it
                log.error("webhook dispatcher: outbox unavailable (%s); retrying", exc)
                delivered = 0
            except Exception:
                log.exception("webhook dispatcher: outbox unavailable; retrying")
                delivered = 0
            if delivered >= BATCH:
                continue
            self._wake.clear()
            if serving:
                # The events of these calls are for a quiet worker; look again for any left over.
                self._stop.wait(HANDOFF_SECONDS / 4)
            elif delivered:
                # Events are flowing, written by the other workers' calls, which do not wake this
                # thread: look again soon, so they go out in small steady claims (and reach the
                # receiver within FLOW_SECONDS) instead of one burst per poll.
                self._stop.wait(FLOW_SECONDS)
            else:
                self._wake.wait(self.poll_seconds)
                # Let the calls of the next moments add their events too: one claim and one
                # commit per batch instead of per event.
                self._stop.wait(COALESCE_SECONDS)

    def purge(self) -> int:
        """Delete the delivered events older than the retention, a batch per transaction."""
        before, deleted = self.clock() - self.retention_seconds, 0
        while not self._stop.is_set():
            count = self.outbox.purge_delivered(before, PURGE_BATCH)
            deleted += count
            if count < PURGE_BATCH:
                break
        return deleted

    def deliver_due(self, left_for_others: float = 0.0) -> int:
        """Post the events due now (at most a batch), skipping those due for less than
        `left_for_others` seconds; returns how many were delivered.

        The claim's lease covers its posting: no new post starts once the time taken so far and
        the slowest post would pass 3/4 of LEASE_SECONDS, so a slow receiver gets the rest from a
        later claim rather than from two workers at once.
        """
        now = self.clock()
        events = self.outbox.claim(now, LEASE_SECONDS, BATCH, due_by=now - left_for_others)
        delivered: list[str] = []
        done, started, slowest = 0, time.monotonic(), 0.0  # events[:done] are answered or failed
        while done < len(events) and not self._stop.is_set():
            if time.monotonic() - started + slowest > LEASE_SECONDS * 0.75:
                break  # a slow receiver: the rest go back before their lease ends
            event, began = events[done], time.monotonic()
            error = self.send(event.event_id, event.body)
            slowest = max(slowest, time.monotonic() - began)
            done += 1
            if error is not None:
                self._failed(event, error)
                break
            delivered.append(event.event_id)
        # Give the rest back untried rather than wait out a timeout for each while the endpoint
        # is failing (or we are stopping); they stay behind the failed one.
        rest = [event.event_id for event in events[done:]]
        if rest:
            self.outbox.release(rest)
        if delivered:
            self.outbox.delivered(delivered, self.clock())
        return len(delivered)

    def _headers(self, event_id: str, body: str) -> dict:
        headers = {"Content-Type": "application/json", "User-Agent": "Tollgate-Webhooks/1"}
        if self.secret:
            headers.update(signature_headers(self.secret, event_id, int(self.clock()), body))
        return headers

    def send(self, event_id: str, body: str) -> str | None:
        """POST one event body now; None on a 2xx, else what went wrong."""
        try:
            response = self._http.post(
                self.url, body.encode(), self._headers(event_id, body), READ_TIMEOUT, connect_timeout=CONNECT_TIMEOUT
            )
        except TransportError as exc:
            return str(exc)
        return None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"

    def _failed(self, event: OutboxEvent, error: str) -> None:
        """Record a failed post: retried after a backoff, or dead once its retry window has passed."""
        if self.on_failure is not None:
            self.on_failure()
        now = self.clock()
        retry_at = now + backoff(event.attempts + 1, self.max_backoff, self._rng)
        if self.outbox.failed(event.event_id, error, retry_at) == "dead":
            log.warning(
                "webhook event %s (%s) is dead after %d attempts: %s",
                event.event_id,
                event.event,
                event.attempts + 1,
                error,
            )
