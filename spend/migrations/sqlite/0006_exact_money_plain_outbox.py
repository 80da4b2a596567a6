"""Money of any size, and one plain outbox for every webhook event.

- Money columns become decimal text: SQLite's INTEGER stops at 2**63 pico-dollars ($9.2 M), and
  an integer too large for it would be stored as an inexact REAL. The connection's `units_add`,
  `units_le` and `units_sum` compute on them exactly.
- `spend_tracked` events were read from the spend log (`announced` rows after a cursor); now every
  event is an outbox row written with its charge. The events still waiting in the spend log are
  rendered as they would have been posted (same `event_id` and body) and put in the outbox, then
  the spend log's announcement columns and the cursor tables go.
- The outbox gets `seq INTEGER PRIMARY KEY`, the order events were written in.
- A reservation says whether it is `capped` (less than its call's worst case): standard budget
  enforcement lets one such call at a time run per account.

Rendering those waiting events needs the payload's format, which only `webhooks.events` knows:
this one data migration imports it; the store itself never does.
"""

from __future__ import annotations

from webhooks.events import Notify, call_event_id, spend_tracked

RETRY_WINDOW_SECONDS = 24 * 3600.0
MONEY = {
    "spend_accounts": {"spend_units": "NOT NULL DEFAULT '0'", "reserved_units": "NOT NULL DEFAULT '0'"},
    "reservations": {"units": "NOT NULL DEFAULT '0'"},
    "budgets": {"max_budget_units": "", "soft_budget_units": ""},
    "spend_logs": {"cost_units": "NOT NULL DEFAULT '0'"},
    "idempotency_keys": {"cost_units": ""},
}
_WAITING = (
    "SELECT request_id, customer_id, cost_units, created_at, key_hash, max_budget_units, soft_budget_units "
    "FROM spend_logs WHERE announced = 1 "
    "AND seq > (SELECT position FROM webhook_cursor) "
    "AND NOT EXISTS (SELECT 1 FROM webhook_claims WHERE done = 1 AND spend_logs.seq > after_seq "
    "AND spend_logs.seq <= through_seq) "
    "AND NOT EXISTS (SELECT 1 FROM webhook_events WHERE webhook_events.seq = spend_logs.seq) ORDER BY seq"
)


def upgrade(connection) -> None:
    _move_waiting_events(connection)
    for table, columns in MONEY.items():
        for column, constraint in columns.items():
            _as_text(connection, table, column, constraint)
    for column in ("announced", "key_hash", "max_budget_units", "soft_budget_units"):
        connection.execute(f"ALTER TABLE spend_logs DROP COLUMN {column}")
    connection.execute("ALTER TABLE reservations ADD COLUMN capped INTEGER NOT NULL DEFAULT 0")
    connection.execute("DROP TABLE webhook_claims")
    connection.execute("DROP TABLE webhook_cursor")
    _rebuild_outbox(connection)


def _move_waiting_events(connection) -> None:
    from spend.store import epoch  # the spend log's own time format

    for request_id, customer_id, cost, created_at, token, max_units, soft_units in connection.execute(
        _WAITING
    ).fetchall():
        ended = epoch(created_at)
        notify = Notify(token=token, max_budget_units=max_units, soft_budget_units=soft_units)
        event = spend_tracked(notify, customer_id, int(cost), ended, call_event_id(request_id, ended))
        connection.execute(
            "INSERT INTO webhook_events (event_id, customer_id, event, payload, next_attempt_at, retry_until, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (event.event_id, customer_id, event.event, event.body, ended, ended + RETRY_WINDOW_SECONDS, ended),
        )


def _as_text(connection, table: str, column: str, constraint: str) -> None:
    """Retype one column as TEXT, keeping its values (no table rebuild, so no foreign key fires)."""
    connection.execute(f"ALTER TABLE {table} ADD COLUMN {column}_text TEXT {constraint}")
    connection.execute(f"UPDATE {table} SET {column}_text = CAST({column} AS TEXT)")
    connection.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    connection.execute(f"ALTER TABLE {table} RENAME COLUMN {column}_text TO {column}")


def _rebuild_outbox(connection) -> None:
    connection.execute(
        "CREATE TABLE webhook_events_next (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, customer_id TEXT, "
        "event TEXT NOT NULL, payload TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending', "
        "attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, retry_until REAL NOT NULL, "
        "lease_until REAL, last_error TEXT, created_at REAL NOT NULL, delivered_at REAL)"
    )
    columns = (
        "event_id, customer_id, event, payload, status, attempts, next_attempt_at, retry_until, lease_until, "
        "last_error, created_at, delivered_at"
    )
    connection.execute(
        f"INSERT INTO webhook_events_next ({columns}) SELECT {columns} FROM webhook_events "
        "ORDER BY created_at, event_id"
    )
    connection.execute("DROP TABLE webhook_events")
    connection.execute("ALTER TABLE webhook_events_next RENAME TO webhook_events")
    connection.execute("CREATE INDEX webhook_events_due ON webhook_events (status, next_attempt_at)")
