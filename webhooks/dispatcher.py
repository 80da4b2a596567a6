"""Delivers the webhook outbox: one background thread per worker process.

The thread claims due events with a lease (so each event is posted by one worker at a time),
POSTs each as JSON with Standard Webhooks signature headers when `WEBHOOK_SECRET` is set, and
records the outcome: any 2xx is delivered; anything else is retried with exponential backoff and
jitter (1 s, 2 s, 4 s … capped at `WEBHOOK_RETRY_MAX_SECONDS`, default 30 min) until the event's
24-hour retry window has passed, then it is marked dead and stays listed for the operator.
Delivery is at least once; receivers de-duplicate on `event_id` (also the `webhook-id` header).
Events go out oldest first; after a failed post the rest of the round waits, so a customer's
events stay in order unless a retried event is overtaken by newer ones once the endpoint is back.
The request path never waits for any of this: it only writes the outbox row and wakes the thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from spend.store import OutboxEvent, SpendStore

log = logging.getLogger("tollgate.webhooks")

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
LEASE_SECONDS = CONNECT_TIMEOUT + READ_TIMEOUT + 10.0  # longer than one post can take
BATCH = 100
COALESCE_SECONDS = 0.05


class Connection:
    """One kept-open HTTP(S) connection to the webhook URL, reopened when it breaks.

    `http.client` rather than `requests`: a post costs a quarter of the CPU, and the delivery
    thread shares its worker's cores with the calls it reports on.
    """

    def __init__(self, url: str):
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._connection: http.client.HTTPConnection | None = None

    def post(self, body: bytes, headers: dict) -> int:
        """The status of one POST; a connection the receiver closed meanwhile is reopened once."""
        for fresh in (self._connection is None, True):
            connection = self._open() if fresh else self._connection
            try:
                connection.request("POST", self._target, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if fresh:
                    raise
                continue
            if response.will_close:
                self.close()
            return response.status
        raise AssertionError("unreachable")

    def _open(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        connection = kind(self._host, self._port, timeout=CONNECT_TIMEOUT)
        connection.connect()
        connection.sock.settimeout(READ_TIMEOUT)
        self._connection = connection
        return connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


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
        store: SpendStore,
        url: str,
        secret: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        poll_seconds: float = 1.0,
        max_backoff: float = 1800.0,
    ):
        self.store, self.url, self.secret = store, url, secret
        self.clock, self.poll_seconds, self.max_backoff = clock, poll_seconds, max_backoff
        self._rng = random.Random()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._connection: Connection | None = None

    def start(self) -> None:
        """Start the thread in this process, once (a thread does not survive fork; it restarts)."""
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            return
        self._pid, self._stop, self._connection = os.getpid(), threading.Event(), Connection(self.url)
        self._thread = threading.Thread(target=self._run, name="tollgate-webhooks", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """New events are in the outbox: look now instead of at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the event in hand and stop; undelivered events stay in the outbox."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._pid == os.getpid():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                backlog = self.deliver_due() == BATCH
            except Exception:
                log.exception("webhook dispatcher: outbox unavailable; retrying")
                backlog = False
            if not backlog:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
                # Let the calls of the next moments add their events too: one claim and one
                # commit per batch instead of per event, and fewer switches away from the calls.
                self._stop.wait(COALESCE_SECONDS)

    def deliver_due(self) -> int:
        """Post the events due now (at most a batch); returns how many were delivered."""
        events = self.store.claim_events(self.clock(), LEASE_SECONDS, BATCH)
        delivered = []
        for index, event in enumerate(events):
            if self._stop.is_set() or not self._post(event):
                # The endpoint is failing (or we are stopping): give the rest back untried rather
                # than wait out a timeout for each, and keep them behind the failed one this round.
                rest = [later.event_id for later in events[index + 1 :]]
                if rest:
                    self.store.release_events(rest)
                break
            delivered.append(event.event_id)
        if delivered:
            self.store.events_delivered(delivered, self.clock())
        return len(delivered)

    def send(self, event_id: str, body: str, connection: Connection | None = None) -> str | None:
        """POST one event body; None on a 2xx, else what went wrong."""
        headers = {"Content-Type": "application/json", "User-Agent": "Tollgate-Webhooks/1"}
        if self.secret:
            headers.update(signature_headers(self.secret, event_id, int(self.clock()), body))
        connection = connection or Connection(self.url)
        try:
            status = connection.post(body.encode(), headers)
        except (OSError, http.client.HTTPException) as exc:
            return type(exc).__name__
        return None if 200 <= status < 300 else f"HTTP {status}"

    def _post(self, event: OutboxEvent) -> bool:
        error = self.send(event.event_id, event.body, self._connection)
        now = self.clock()
        if error is None:
            return True
        retry_at = now + backoff(event.attempts + 1, self.max_backoff, self._rng)
        if self.store.event_failed(event.event_id, error, retry_at, now) == "dead":
            log.warning(
                "webhook event %s (%s) is dead after %d attempts: %s",
                event.event_id,
                event.event,
                event.attempts + 1,
                error,
            )
        return False
