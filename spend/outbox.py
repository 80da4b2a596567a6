"""The outbox role (`spend.store.Outbox`): webhook events, written once for every engine's `Database`.

A plain transactional outbox. `record_call` inserts a call's events (rendered by
`webhooks.events`) in the transaction that charges it (`add_events`), so an event exists exactly
when its charge does. Each worker's delivery thread claims due events with a lease: on
PostgreSQL the claim's subquery also skips rows another box is claiming at that moment
(`FOR UPDATE SKIP LOCKED`), on SQLite the one writer at a time does that. A claimed event is
posted, then marked delivered, or failed and rescheduled with backoff until its retry window
has passed (then dead, kept for the operator). `seq` is the order events were written in.
"""

from __future__ import annotations

from spend.store import Cursor, Database, Event, OutboxDepth, OutboxEvent

# Every event gets at least this long of retries before it is marked dead.
RETRY_WINDOW_SECONDS = 24 * 3600.0
# Pending, due by :due and not leased at :now.
_DUE = "status = 'pending' AND next_attempt_at <= :due AND (lease_until IS NULL OR lease_until <= :now)"
_COLUMNS = "event_id, event, customer_id, payload, status, attempts, created_at, next_attempt_at, last_error"


def add_events(tx: Cursor, events: list[Event], now: float) -> None:
    """Insert events in the caller's transaction; a budget event whose mark exists already (same
    customer, event, threshold and window) is dropped."""
    for event in events:
        if event.mark is not None:
            threshold, window = event.mark
            marked = tx.execute(
                "INSERT INTO alert_marks (customer_id, event, threshold, window_end, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (event.customer_id, event.event, threshold, window, now),
            )
            if marked.rowcount == 0:
                continue
        tx.execute(
            "INSERT INTO webhook_events (event_id, customer_id, event, payload, next_attempt_at, retry_until, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event.event_id, event.customer_id, event.event, event.body, now, now + RETRY_WINDOW_SECONDS, now),
        )


def _marks(values: list) -> str:
    return ", ".join("?" for _ in values)


def _event(row: tuple) -> OutboxEvent:
    return OutboxEvent(*row)


class SQLOutbox:
    def __init__(self, db: Database):
        self.db = db

    def claim(self, now: float, lease_seconds: float, limit: int, due_by: float | None = None) -> list[OutboxEvent]:
        due = {"due": now if due_by is None else due_by, "now": now}
        # Look before writing: a dispatcher with nothing to do stays out of the calls' way.
        found = self.db.read(
            lambda tx: tx.execute(f"SELECT 1 FROM webhook_events WHERE {_DUE} LIMIT 1", due).fetchone()
        )
        if found is None:
            return []
        # The first due events in the order they were written, read off the (status, next_attempt_at)
        # index: a claim stops at its limit however long the backlog.
        claim = (
            f"UPDATE webhook_events SET lease_until = :until WHERE seq IN (SELECT seq FROM webhook_events "
            f"WHERE {_DUE} ORDER BY next_attempt_at, seq LIMIT :limit{self.db.skip_locked}) "
            f"RETURNING seq, {_COLUMNS}"
        )
        params = {**due, "until": now + lease_seconds, "limit": limit}
        rows = self.db.write(lambda tx: tx.execute(claim, params).fetchall())
        return [_event(row[1:]) for row in sorted(rows, key=lambda row: (row[8], row[0]))]

    def release(self, event_ids: list[str]) -> None:
        if not event_ids:
            return
        self.db.write(
            lambda tx: tx.execute(
                f"UPDATE webhook_events SET lease_until = NULL WHERE event_id IN ({_marks(event_ids)})", event_ids
            )
        )

    def delivered(self, event_ids: list[str], now: float) -> None:
        if not event_ids:
            return
        self.db.write(
            lambda tx: tx.execute(
                "UPDATE webhook_events SET status = 'delivered', attempts = attempts + 1, delivered_at = ?, "
                f"lease_until = NULL, last_error = NULL WHERE event_id IN ({_marks(event_ids)})",
                (now, *event_ids),
            )
        )

    def failed(self, event_id: str, error: str, retry_at: float) -> str:
        return self.db.write(
            lambda tx: tx.execute(
                "UPDATE webhook_events SET attempts = attempts + 1, last_error = :error, lease_until = NULL, "
                "next_attempt_at = :retry_at, status = CASE WHEN :retry_at >= retry_until THEN 'dead' ELSE 'pending' "
                "END WHERE event_id = :event_id RETURNING status",
                {"error": error[:500], "retry_at": retry_at, "event_id": event_id},
            ).fetchone()[0]
        )

    def purge_delivered(self, before: float, limit: int) -> int:
        # A delivered event's next_attempt_at is never after its delivered_at: the index on
        # (status, next_attempt_at) finds the candidates without reading every delivered row.
        old = (
            "SELECT seq FROM webhook_events "
            "WHERE status = 'delivered' AND next_attempt_at < :before AND delivered_at < :before"
        )
        if self.db.read(lambda tx: tx.execute(f"{old} LIMIT 1", {"before": before}).fetchone()) is None:
            return 0
        return self.db.write(
            lambda tx: (
                tx.execute(
                    f"DELETE FROM webhook_events WHERE seq IN ({old} LIMIT :limit)", {"before": before, "limit": limit}
                ).rowcount
            )
        )

    def list(self, status: str | None, limit: int) -> list[OutboxEvent]:
        where, params = ("", ()) if status is None else (" WHERE status = ?", (status,))
        sql = f"SELECT {_COLUMNS} FROM webhook_events{where} ORDER BY seq DESC LIMIT ?"
        return [_event(row) for row in self.db.read(lambda tx: tx.execute(sql, (*params, limit)).fetchall())]

    def requeue(self, event_ids: list[str] | None, now: float, retry_window: float) -> int:
        if event_ids == []:
            return 0
        if event_ids is None:
            where, params = "status = 'dead'", ()
        else:
            where, params = f"event_id IN ({_marks(event_ids)}) AND status != 'delivered'", tuple(event_ids)
        sql = (
            "UPDATE webhook_events SET status = 'pending', next_attempt_at = ?, retry_until = ?, lease_until = NULL "
            f"WHERE {where}"
        )
        return self.db.write(lambda tx: tx.execute(sql, (now, now + retry_window, *params)).rowcount)

    def pending_depth(self) -> OutboxDepth:
        # Counted off the (status, next_attempt_at) index; pending events are few unless delivery is stuck.
        sql = "SELECT COUNT(*), MIN(created_at) FROM webhook_events WHERE status = 'pending'"
        count, oldest = self.db.read(lambda tx: tx.execute(sql).fetchone())
        return OutboxDepth(pending=int(count), oldest_created_at=None if oldest is None else float(oldest))
