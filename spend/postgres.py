"""The PostgreSQL engine: one database shared by every worker of every box.

- psycopg 3 with a `psycopg_pool.ConnectionPool` per process, opened on first use, so after
  gunicorn forks (a pool inherited through fork is left alone, never used or closed). Its size
  is the worker's thread count, capped by `DATABASE_POOL_SIZE` (default 10): a transaction holds
  a connection for about a millisecond, so ten serve hundreds of waiting calls, and
  instances x workers x pool size stays under the server's `max_connections`.
- Connections run in autocommit; a write is one explicit transaction (READ COMMITTED). Where
  boxes write at once, the ledger locks the customer's row (`SELECT … FOR UPDATE`) for its
  admissions and reserved settlements, the reservation is a conditional UPDATE, rate-limit
  windows are rows in the database, and the outbox's claim skips rows another box is claiming
  (`FOR UPDATE SKIP LOCKED`).
- A connection that sat idle in the pool for more than CHECK_IDLE_SECONDS is checked (one short
  round trip) before it is handed out, so a database that restarted or a connection a firewall
  dropped while idle costs no call; one in steady use is not (a check on every checkout was a
  sixth of a worker's time under load). A connection that fails in use is discarded by the
  pool. While the database cannot be reached, every use raises `StoreUnavailable` within
  POOL_TIMEOUT_SECONDS, and the pool reconnects by itself when it is back; while it answers and
  every connection is lent out (a burst of thousands of calls), a call waits its turn for up to
  BUSY_WAIT_SECONDS instead. A database that
  refuses writes (a standby in recovery, sessions made read-only with
  `default_transaction_read_only`) raises `StoreUnavailable` too, and `ping` answers False.
- Migrations run under an advisory lock: boxes starting at once apply each exactly once.
- The roles' SQL is written with `?` and `:name` parameters; `_sql` turns them into psycopg's.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from spend import migrations
from spend.admin import SQLAdmin
from spend.ledger import SQLLedger
from spend.outbox import SQLOutbox
from spend.store import Store, StoreUnavailable, Unstorable, can_write, iso_timestamp

log = logging.getLogger("tollgate.store")

POOL_TIMEOUT_SECONDS = 5.0  # how long a call waits for a connection the pool cannot make before it is answered 503
BUSY_WAIT_SECONDS = 60.0  # how long a call waits while every connection is lent out (a burst), then 503
PING_TIMEOUT_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 5
DEFAULT_POOL_SIZE = 10
CHECK_IDLE_SECONDS = 2.0
MIGRATION_LOCK = 7_346_519_021  # pg_advisory_xact_lock key: "Tollgate migrations"
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@lru_cache(maxsize=2048)
def _sql(statement: str) -> str:
    """`?` and `:name` parameters as psycopg's `%s` and `%(name)s` (a literal `%` doubled)."""
    return _NAMED.sub(r"%(\1)s", statement.replace("%", "%%")).replace("?", "%s")


class _Cursor:
    """A connection that speaks the roles' parameter style."""

    def __init__(self, connection: psycopg.Connection):
        self.connection = connection

    def execute(self, sql: str, params: Sequence | dict = ()) -> psycopg.Cursor:
        if not params:
            return self.connection.execute(sql)
        return self.connection.execute(_sql(sql), params)


def pool_size(environ: dict | None = None) -> int:
    """Connections per worker: its threads (GUNICORN_THREADS), at most DATABASE_POOL_SIZE."""
    environ = os.environ if environ is None else environ
    threads = int(environ.get("GUNICORN_THREADS", "512"))
    return max(1, min(threads, int(environ.get("DATABASE_POOL_SIZE", str(DEFAULT_POOL_SIZE)))))


class PostgresDatabase:
    """The `Database` the roles work on, and the `Engine` of its store."""

    locks_rows = True
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, size: int):
        self.url, self.size = url, size
        self._pool: tuple[int, ConnectionPool] | None = None
        self._lock = threading.Lock()
        self._idle_since: dict[int, float] = {}  # id(connection) -> time.monotonic() it went back to the pool

    # -- connections ---------------------------------------------------------------------

    def _here(self) -> ConnectionPool:
        """This process's pool, opened on its first use here."""
        held = self._pool
        if held is not None and held[0] == os.getpid():
            return held[1]
        with self._lock:
            if self._pool is None or self._pool[0] != os.getpid():
                pool = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self.size,
                    timeout=POOL_TIMEOUT_SECONDS,
                    kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_SECONDS},
                    check=self._check_if_idle,
                    reset=self._returned,
                    name=f"tollgate-{os.getpid()}",
                    open=True,
                )
                self._pool = (os.getpid(), pool)
            return self._pool[1]

    def _returned(self, connection: psycopg.Connection) -> None:
        """When a connection goes back to the pool (psycopg_pool's `reset` callback): note the time."""
        self._idle_since[id(connection)] = time.monotonic()

    def _check_if_idle(self, connection: psycopg.Connection) -> None:
        """psycopg_pool's `check` callback: check a connection that sat idle a while; a failed
        check raises, and the pool discards it and hands out another."""
        if time.monotonic() - self._idle_since.get(id(connection), 0.0) > CHECK_IDLE_SECONDS:
            ConnectionPool.check_connection(connection)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection. While every connection is open and lent out (the database
        answering, this worker busy), a call waits for one up to BUSY_WAIT_SECONDS; when the pool
        cannot make connections (the database not answering), PoolTimeout after POOL_TIMEOUT_SECONDS."""
        pool = self._here()
        deadline = time.monotonic() + BUSY_WAIT_SECONDS
        while True:
            try:
                connection = pool.getconn()
                break
            except PoolTimeout:
                if pool.get_stats().get("pool_size", 0) < pool.max_size or time.monotonic() >= deadline:
                    raise
        try:
            with connection:  # as psycopg_pool's own `connection()`: the transaction ended, not the connection
                yield connection
        finally:
            pool.putconn(connection)

    def write(self, op: Callable[[_Cursor], Any]) -> Any:
        try:
            with self._connection() as connection, connection.transaction():
                return op(_Cursor(connection))
        except (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc
        except psycopg.DataError as exc:
            raise Unstorable(_first_line(exc)) from exc

    def read(self, op: Callable[[_Cursor], Any]) -> Any:
        try:
            with self._connection() as connection:
                return op(_Cursor(connection))
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc
        except psycopg.DataError as exc:
            raise Unstorable(_first_line(exc)) from exc

    @staticmethod
    def units(value: int | None) -> int | None:
        return value

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        reason = "no connection could be made in time" if isinstance(exc, PoolTimeout) else _first_line(exc)
        return StoreUnavailable(f"{self.describe()}: {reason}")

    def describe(self) -> str:
        try:
            parts = conninfo_to_dict(self.url)
        except psycopg.ProgrammingError:
            return "PostgreSQL database (unparsable DATABASE_URL)"
        host = parts.get("host") or "localhost"
        return f"PostgreSQL database '{parts.get('dbname', '')}' on {host}:{parts.get('port') or 5432}"

    def close(self) -> None:
        with self._lock:
            held, self._pool = self._pool, None
        if held is not None and held[0] == os.getpid():
            held[1].close()

    def start_background(self) -> None:
        """Nothing to keep up: PostgreSQL checkpoints and vacuums by itself."""

    def stop_background(self) -> None:
        pass

    def check_writable(self) -> None:
        """Raise `StoreUnavailable` unless this process's sessions can write: the server answers,
        is not a standby in recovery, and its transactions are not read-only."""
        try:
            with self._here().connection(timeout=PING_TIMEOUT_SECONDS) as connection:
                standby, read_only = connection.execute(
                    "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')"
                ).fetchone()
        except (psycopg.Error, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc
        if standby:
            raise StoreUnavailable(f"{self.describe()} is a standby in recovery: it cannot be written")
        if read_only == "on":
            raise StoreUnavailable(f"{self.describe()} is read-only for this session (default_transaction_read_only)")

    def ping(self) -> bool:
        return can_write(self, log)

    # -- schema --------------------------------------------------------------------------

    def _direct(self) -> psycopg.Connection:
        """A connection of its own, outside the pool (the schema's, before any worker runs)."""
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS)
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from exc

    def pending_migrations(self) -> list[str]:
        try:
            with self._direct() as connection:
                (table,) = connection.execute("SELECT to_regclass('schema_migrations')").fetchone()
                return migrations.pending(_Cursor(connection), migrations.load("postgres"), has_table=table is not None)
        except psycopg.Error as exc:
            raise self._unavailable(exc) from exc

    def migrate(self, report: Callable[[str], None] | None = None) -> list[str]:
        try:
            return self._migrate(migrations.Progress(report))
        except psycopg.Error as exc:
            raise self._unavailable(exc) from exc

    def _migrate(self, progress: migrations.Progress) -> list[str]:
        with self._direct() as connection:
            # Every box may start at once: the first to take the lock migrates, the others then find nothing to do.
            with connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                connection.execute(migrations.TABLE)
                cursor = _Cursor(connection)
                todo = migrations.pending_ones(cursor, migrations.load("postgres"))
                with _ticking(progress):
                    for migration in todo:
                        progress.run(migration, cursor, iso_timestamp(time.time()))
        return [migration.label for migration in todo]


class _ticking:
    """Calls `progress.tick()` every second while a migration runs (PostgreSQL has no callback)."""

    def __init__(self, progress: migrations.Progress):
        self.progress, self.done = progress, threading.Event()

    def __enter__(self):
        def tick():
            while not self.done.wait(1.0):
                self.progress.tick()

        threading.Thread(target=tick, daemon=True).start()

    def __exit__(self, *exc):
        self.done.set()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def open_postgres(database_url: str, environ: dict | None = None) -> Store:
    """A store on the PostgreSQL database of `database_url`; nothing is connected until first use."""
    db = PostgresDatabase(database_url, pool_size(environ))
    return Store(engine=db, ledger=SQLLedger(db), admin=SQLAdmin(db), outbox=SQLOutbox(db))
