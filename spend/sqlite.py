"""The SQLite backend: one file shared by every gunicorn worker.

- WAL journal, so readers never wait for the writer; `synchronous=NORMAL` (a committed call
  survives any crash of Tollgate; only an OS crash or power cut can lose the last commits).
- Every write transaction starts with `BEGIN IMMEDIATE`, taking the write lock up front, so two
  workers never deadlock upgrading a read lock; the busy timeout makes the other writers wait.
- Connections are per thread and per process, opened on first use: nothing opened before
  gunicorn forks is ever used after it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from spend import migrations
from spend.store import Budget, CallRecord, Customer, SpendLogRow, iso_timestamp

BUSY_TIMEOUT_SECONDS = 30.0


def sqlite_path(database_url: str) -> str:
    """`sqlite:///rel.db` → `rel.db`, `sqlite:////abs.db` → `/abs.db`; a bare path as is."""
    if database_url.startswith("sqlite:///"):
        return database_url[len("sqlite:///") :]
    if database_url.startswith("sqlite://"):
        raise ValueError(f"unsupported SQLite URL {database_url!r}: use sqlite:///relative.db or sqlite:////abs.db")
    return database_url


class SQLiteStore:
    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []

    # -- connections ---------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is not None and self._local.pid == os.getpid():
            return connection
        connection = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("PRAGMA foreign_keys = ON")
        self._local.connection, self._local.pid = connection, os.getpid()
        with self._lock:
            self._connections.append(connection)
        return connection

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the lock from its first statement."""
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            try:
                connection.close()
            except sqlite3.ProgrammingError:
                pass  # created by another thread that is still using it; it closes on exit
        self._local = threading.local()

    def ping(self) -> bool:
        try:
            return self._connection().execute("SELECT 1").fetchone() == (1,)
        except sqlite3.Error:
            return False

    # -- schema --------------------------------------------------------------------------

    def migrate(self) -> None:
        connection = self._connection()
        self._enable_wal(connection)
        with self._write() as connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            applied = {row[0] for row in connection.execute("SELECT version FROM schema_migrations")}
            for migration in migrations.load("sqlite"):
                if migration.version in applied:
                    continue
                for statement in migration.statements:
                    connection.execute(statement)
                connection.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, iso_timestamp(time.time())),
                )

    @staticmethod
    def _enable_wal(connection: sqlite3.Connection) -> None:
        # Switching to WAL needs a moment alone with the file; workers starting together retry.
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        while True:
            try:
                connection.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # -- calls ---------------------------------------------------------------------------

    def record_call(self, record: CallRecord) -> None:
        usage = record.usage
        now = iso_timestamp(record.ended_at)
        with self._write() as connection:
            if record.customer_id is not None and record.status == "success":
                connection.execute(
                    "INSERT INTO customers (user_id, spend_units, created_at, updated_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (user_id) DO UPDATE SET spend_units = spend_units + excluded.spend_units, "
                    "updated_at = excluded.updated_at",
                    (record.customer_id, record.cost_units, now, now),
                )
            connection.execute(
                "INSERT INTO spend_logs (request_id, customer_id, model_group, provider_model, deployment_id, "
                "prompt_tokens, completion_tokens, cached_tokens, cache_creation_tokens, reasoning_tokens, "
                "cost_units, priced, estimated, status, error, latency_ms, started_at, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.request_id,
                    record.customer_id,
                    record.model_group,
                    record.provider_model,
                    record.deployment_id,
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    usage.cached_tokens,
                    usage.cache_creation_tokens,
                    usage.reasoning_tokens,
                    record.cost_units,
                    int(record.priced),
                    int(record.estimated),
                    record.status,
                    record.error,
                    record.latency_ms,
                    iso_timestamp(record.started_at),
                    now,
                ),
            )

    # -- reads ---------------------------------------------------------------------------

    def get_customer(self, user_id: str) -> Customer | None:
        row = (
            self._connection()
            .execute(
                "SELECT c.user_id, c.spend_units, c.blocked, c.alias, c.allowed_model_region, c.default_model, "
                "c.models, b.budget_id, b.max_budget_units, b.soft_budget_units, b.tpm_limit, b.rpm_limit, "
                "b.model_max_budget, b.budget_duration, b.budget_reset_at, b.created_at "
                "FROM customers c LEFT JOIN budgets b ON b.budget_id = c.budget_id WHERE c.user_id = ?",
                (user_id,),
            )
            .fetchone()
        )
        if row is None:
            return None
        budget = None
        if row[7] is not None:
            budget = Budget(
                budget_id=row[7],
                max_budget_units=row[8],
                soft_budget_units=row[9],
                tpm_limit=row[10],
                rpm_limit=row[11],
                model_max_budget=json.loads(row[12]) if row[12] else None,
                budget_duration=row[13],
                budget_reset_at=row[14],
                created_at=row[15],
            )
        return Customer(
            user_id=row[0],
            spend_units=row[1],
            blocked=bool(row[2]),
            alias=row[3],
            allowed_model_region=row[4],
            default_model=row[5],
            models=tuple(json.loads(row[6] or "[]")),
            budget=budget,
        )

    def spend_logs(self, customer_id: str | None = None, limit: int = 1000) -> list[SpendLogRow]:
        query = (
            "SELECT request_id, customer_id, model_group, provider_model, deployment_id, prompt_tokens, "
            "completion_tokens, cost_units, status, estimated, created_at FROM spend_logs"
        )
        params: tuple = ()
        if customer_id is not None:
            query += " WHERE customer_id = ?"
            params = (customer_id,)
        query += " ORDER BY created_at DESC, request_id LIMIT ?"
        rows = self._connection().execute(query, (*params, limit)).fetchall()
        return [
            SpendLogRow(*row[:9], estimated=bool(row[9]), created_at=row[10])  # type: ignore[misc]
            for row in rows
        ]
