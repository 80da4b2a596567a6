"""Spend-log retention: `general_settings.maximum_spend_logs_retention_period`, as in LiteLLM.

With a period set (`"7d"`, `"24h"`, `"60m"`, `"3600s"`, `"2w"`; read by `config.period_seconds`),
every worker process runs a background thread that deletes the spend-log rows created longer ago
than the period: once when the worker starts, then every `maximum_spend_logs_retention_interval`
(default `"1d"`). Rows go a batch per transaction (BATCH), with a pause between batches, so the
calls' own writes are never held up for long. Each worker runs it on its own, harmlessly: a row is deleted once, and on
PostgreSQL workers skip the rows another one is deleting at that moment.

Only the spend log is pruned: customers' spend, budgets, the daily activity rollup (aggregates)
and the webhook outbox (`WEBHOOK_RETENTION_DAYS`) are not touched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from spend.store import Ledger
from thread_names import RETENTION, name_this_thread

log = logging.getLogger("tollgate.retention")

BATCH = 1000  # rows deleted per transaction
BATCH_PAUSE_SECONDS = 0.05  # between batches: the calls' writes get their turns
DEFAULT_INTERVAL_SECONDS = 86_400.0


class Retention:
    """The spend log's pruning thread of one worker process."""

    def __init__(
        self,
        ledger: Ledger,
        period_seconds: float,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        *,
        clock: Callable[[], float] = time.time,
        batch: int = BATCH,
    ):
        self.ledger, self.period, self.interval = ledger, period_seconds, interval_seconds
        self.clock, self.batch = clock, batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def prune(self) -> int:
        """Delete every spend-log row older than the period, a batch per transaction; how many."""
        cutoff, deleted = self.clock() - self.period, 0
        while not self._stop.is_set():
            count = self.ledger.delete_spend_logs_before(cutoff, self.batch)
            deleted += count
            if count < self.batch:
                break
            self._stop.wait(BATCH_PAUSE_SECONDS)
        return deleted

    def start(self) -> None:
        """Start this process's thread (after gunicorn's fork: a thread does not survive one)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name=RETENTION, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the batch in hand; the rest is deleted by the next pass."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, stop: threading.Event) -> None:
        name_this_thread(RETENTION)
        while not stop.is_set():
            try:
                deleted = self.prune()
            except Exception:
                log.exception("retention: could not delete old spend-log rows; retrying at the next pass")
            else:
                if deleted:
                    log.info("retention: deleted %d spend-log row(s) older than %gs", deleted, self.period)
            stop.wait(self.interval)
