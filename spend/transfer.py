"""Copy a SQLite database into PostgreSQL: `python cli.py copy-sqlite PATH` (README, "Scaling out").

The source is brought to the current schema first (the same migrations a web process applies),
read table by table in a consistent order (tiers before the customers that name them, rows in
the order they were written), and written with `COPY` into a new, empty PostgreSQL schema, all
in one transaction: a copy that fails leaves the target as it was. Money stays exact (decimal
text on SQLite, NUMERIC on PostgreSQL); SQLite's 0/1 flags become booleans. Stop the web
processes on the SQLite file first: what they write during the copy would not be copied.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass

import psycopg

from spend.postgres import CONNECT_TIMEOUT_SECONDS, PostgresDatabase
from spend.sqlite import SQLiteDatabase
from spend.store import StoreUnavailable

REPORT_EVERY_ROWS = 100_000


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    order: str
    flags: tuple[str, ...] = ()  # 0/1 on SQLite, booleans on PostgreSQL
    money: tuple[str, ...] = ()  # decimal text on SQLite, NUMERIC on PostgreSQL


TABLES = (
    Table(
        "budgets",
        ("budget_id", "max_budget_units", "soft_budget_units", "tpm_limit", "rpm_limit", "model_max_budget",
         "budget_duration", "budget_reset_at", "created_at", "updated_at", "owner_user_id"),
        "created_at, budget_id",
        money=("max_budget_units", "soft_budget_units"),
    ),
    Table(
        "customers",
        ("user_id", "alias", "blocked", "allowed_model_region", "default_model", "models", "budget_id", "created_at",
         "updated_at"),
        "user_id",
        flags=("blocked",),
    ),
    Table(
        "spend_accounts",
        ("user_id", "scope", "spend_units", "reserved_units", "period_end"),
        "user_id, scope",
        money=("spend_units", "reserved_units"),
    ),
    Table("reservations", ("request_id", "user_id", "scope", "units", "expires_at", "capped"), "request_id, scope",
          flags=("capped",), money=("units",)),
    Table("rate_events", ("request_id", "user_id", "at", "tokens"), "at, request_id"),
    Table(
        "spend_logs",
        ("request_id", "customer_id", "model_group", "provider_model", "deployment_id", "prompt_tokens",
         "completion_tokens", "cached_tokens", "cache_creation_tokens", "reasoning_tokens", "cost_units", "priced",
         "estimated", "status", "error", "latency_ms", "started_at", "created_at", "attempts", "response_id"),
        "seq",
        flags=("priced", "estimated"),
        money=("cost_units",),
    ),
    Table(
        "webhook_events",
        ("event_id", "customer_id", "event", "payload", "status", "attempts", "next_attempt_at", "retry_until",
         "lease_until", "last_error", "created_at", "delivered_at"),
        "seq",
    ),
    Table("alert_marks", ("customer_id", "event", "threshold", "window_end", "created_at"),
          "customer_id, event, threshold, window_end"),
    Table(
        "idempotency_keys",
        ("customer_id", "idempotency_key", "request_id", "state", "response", "content_type", "cost_units",
         "expires_at", "created_at"),
        "customer_id, idempotency_key",
        money=("cost_units",),
    ),
    Table(
        "daily_activity",
        ("day", "customer_id", "model_group", "provider_model", "spend_units", "prompt_tokens", "completion_tokens",
         "cache_read_tokens", "cache_creation_tokens", "api_requests", "successful_requests", "failed_requests"),
        "day, customer_id, model_group, provider_model",
        money=("spend_units",),
    ),
)  # fmt: skip


class NotEmpty(Exception):
    """The target database holds data already: copying would mix two ledgers."""


def copy_sqlite_to_postgres(source_path: str, target_url: str, report: Callable[[str], None]) -> dict[str, int]:
    """Copy every table of the SQLite file at `source_path` into the PostgreSQL `target_url`; the
    rows copied per table. Raises NotEmpty when the target has customers, budgets or calls.
    Dashboard sessions are not copied: an operator logs in again after the move."""
    source = SQLiteDatabase(source_path)
    target = PostgresDatabase(target_url, size=1)
    try:
        source.migrate(report)
        target.migrate(report)
    finally:
        source.close()
    counts = {}
    with closing(sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)) as reader:
        reader.execute("BEGIN")  # one snapshot of the whole file
        try:
            with psycopg.connect(target_url, connect_timeout=CONNECT_TIMEOUT_SECONDS) as writer:
                _refuse_if_used(writer, target.describe())
                for table in TABLES:
                    counts[table.name] = _copy(reader, writer, table, report)
                writer.commit()
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"{target.describe()}: {str(exc).strip().splitlines()[0]}") from exc
    return counts


def _refuse_if_used(writer: psycopg.Connection, where: str) -> None:
    for name in ("customers", "budgets", "spend_logs"):
        if writer.execute(f"SELECT 1 FROM {name} LIMIT 1").fetchone() is not None:
            raise NotEmpty(f"{where} already has rows in {name}; copy into a new, empty database")


def _copy(reader: sqlite3.Connection, writer: psycopg.Connection, table: Table, report: Callable[[str], None]) -> int:
    columns = ", ".join(table.columns)
    flags = [table.columns.index(column) for column in table.flags]
    money = [table.columns.index(column) for column in table.money]
    copied = 0
    rows = reader.execute(f"SELECT {columns} FROM {table.name} ORDER BY {table.order}")
    with writer.cursor().copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
        for row in rows:
            values = list(row)
            for index in flags:
                values[index] = bool(values[index])
            for index in money:
                if values[index] is not None:
                    values[index] = int(values[index])
            copy.write_row(values)
            copied += 1
            if copied % REPORT_EVERY_ROWS == 0:
                report(f"copy {table.name}: {copied:,} rows so far")
    report(f"copy {table.name}: {copied:,} rows")
    return copied
