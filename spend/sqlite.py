"""The SQLite backend: one file shared by every gunicorn worker.

- WAL journal, so readers never wait for the writer; `synchronous=NORMAL` (a committed call
  survives any crash of Tollgate; only an OS crash or power cut can lose the last commits).
- Every write transaction starts with `BEGIN IMMEDIATE`, taking the write lock up front, so two
  workers never deadlock upgrading a read lock. Writers first take their turn (`WriterTurn`): a
  thread lock within the process, then `flock` on `<database>-lock` across processes, both of
  which hand over at once, where SQLite's busy handler sleeps in steps of up to 100 ms and turned
  bursts into slow tails. Calls' writes go further: while one thread commits, the writes queued
  behind it are run together by the next, each in its own savepoint, with one commit (group
  commit, `_group_write`); a thread whose write was run that way returns once it has the thread
  lock, without taking the lock file and so without waiting behind the other workers' turns.
- Connections are per thread and per process, opened on first use: nothing opened before
  gunicorn forks is ever used after it.
- The WAL is copied back into the database (a checkpoint, with its fsyncs) by a background
  thread in each worker ten times a second (`start_background`), not by whichever call's commit
  happens to pass SQLite's default 1000 pages: that call waited ~10 ms, which was the whole p99
  of a single client. Checkpoints stall concurrent commits in proportion to their size, so they
  are kept small (single-client p99, bench.run: every 2 s 33 ms, every 0.5 s 6.3 ms, every
  0.1 s 2.3 ms). Should the thread not run, SQLite still checkpoints at 10000 pages.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from spend import budgets, migrations
from spend.budgets import Account, OverBudget, OverRate, Plan, RateUsage
from spend.sqlite_admin import CustomerAdmin, read_customer
from spend.sqlite_outbox import Outbox, add_events
from spend.store import (
    PLAIN_CALL,
    AdmissionRequest,
    CallRecord,
    Customer,
    IdempotencyClaim,
    Replay,
    Settlement,
    SpendLogFilter,
    SpendLogRow,
    epoch,
    iso_timestamp,
)
from thread_names import CHECKPOINT, name_this_thread
from webhooks import events as webhook_events
from webhooks.events import Notify

log = logging.getLogger("tollgate.store")

BUSY_TIMEOUT_SECONDS = 30.0
IDEMPOTENCY_SECONDS = 24 * 3600.0
CHECKPOINT_SECONDS = 0.1
AUTOCHECKPOINT_PAGES = 10000  # the fallback: ~40 MB of WAL


def sqlite_path(database_url: str) -> str:
    """`sqlite:///rel.db` → `rel.db`, `sqlite:////abs.db` → `/abs.db`; a bare path as is."""
    if database_url.startswith("sqlite:///"):
        return database_url[len("sqlite:///") :]
    if database_url.startswith("sqlite://"):
        raise ValueError(f"unsupported SQLite URL {database_url!r}: use sqlite:///relative.db or sqlite:////abs.db")
    return database_url


class WriterTurn:
    """One writer at a time: a lock among this process's threads, then `flock` on `<database>-lock`
    among the processes (every gunicorn worker, the CLI).

    SQLite's own wait for its write lock polls with sleeps of 1, 2, 5, 10 … 100 ms, so a worker
    waiting behind the other worker's steady stream of short transactions kept losing the race
    and its calls waited hundreds of milliseconds. The kernel wakes an `flock` waiter as soon as
    the lock is free. `BEGIN IMMEDIATE` then finds SQLite's lock free; writers that do not take
    this turn (another program) are still waited for by SQLite's busy timeout.
    """

    def __init__(self, database_path: str):
        self.pid = os.getpid()
        self.threads = threading.Lock()
        self._fd = os.open(f"{database_path}-lock", os.O_RDWR | os.O_CREAT, 0o644)

    def __enter__(self) -> None:
        self.threads.acquire()
        try:
            self.lock_file()
        except BaseException:
            self.threads.release()
            raise

    def __exit__(self, *exc) -> None:
        self.unlock_file()
        self.threads.release()

    def lock_file(self) -> None:
        """The other processes' part of the turn (the caller holds `threads`)."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def unlock_file(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


@dataclass
class _Pending:
    """A write waiting for the next group commit."""

    op: Callable[[sqlite3.Connection], Any]
    result: Any = None
    error: BaseException | None = None
    done: bool = False


class SQLiteStore(CustomerAdmin, Outbox):
    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._writers: WriterTurn | None = None
        self._pending: tuple[int, list[_Pending], threading.Lock] = (os.getpid(), [], threading.Lock())
        self._upkeep: tuple[int, threading.Thread, threading.Event] | None = None

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
        connection.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
        self._local.connection, self._local.pid = connection, os.getpid()
        with self._lock:
            self._connections.append(connection)
        return connection

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the lock from its first statement."""
        connection = self._connection()
        with self._writer_lock():
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def _group_write(self, op: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run `op(connection)` in a write transaction shared with the writes queued meanwhile.

        Group commit: a thread that gets the writer lock runs every queued operation in one
        transaction, each inside its own savepoint (a failing one is rolled back alone and its
        error raised in its own thread), and commits once. Alone it is an ordinary transaction;
        under load, calls that would each wait for the lock share one commit instead.
        """
        item = _Pending(op)
        pid, queue, queue_lock = self._pending
        if pid != os.getpid():
            self._pending = pid, queue, queue_lock = (os.getpid(), [], threading.Lock())
        with queue_lock:
            queue.append(item)
        turn = self._writer_lock()
        with turn.threads:
            # The thread that had the turn before may have run this write with its own: then it
            # is committed, and there is no need to wait for the other processes' turns too.
            if not item.done:
                try:
                    turn.lock_file()
                except BaseException:
                    with queue_lock:  # withdrawn: a write reported failed must not run later in another's group
                        queue[:] = [queued for queued in queue if queued is not item]
                    raise
                try:
                    with queue_lock:
                        batch = queue[:]
                        queue.clear()
                    self._run_batch(batch)
                finally:
                    turn.unlock_file()
        if item.error is not None:
            raise item.error
        return item.result

    def _run_batch(self, batch: list[_Pending]) -> None:
        connection = self._connection()
        try:
            connection.execute("BEGIN IMMEDIATE")
            if len(batch) == 1:  # alone: the transaction itself is the savepoint
                batch[0].result = batch[0].op(connection)
            else:
                for item in batch:
                    connection.execute("SAVEPOINT write")
                    try:
                        item.result = item.op(connection)
                        connection.execute("RELEASE write")
                    except Exception as exc:
                        connection.execute("ROLLBACK TO write")
                        connection.execute("RELEASE write")
                        item.error = exc
            connection.execute("COMMIT")
        except BaseException as exc:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            for item in batch:
                item.error, item.result = item.error or exc, None
        finally:
            for item in batch:
                item.done = True

    def _writer_lock(self) -> WriterTurn:
        turn = self._writers
        if turn is None or turn.pid != os.getpid():  # one inherited through fork may be held by a thread that is gone
            with self._lock:  # one turn per process, even when its first writers start together
                if self._writers is None or self._writers.pid != os.getpid():
                    self._writers = WriterTurn(self.path)
                turn = self._writers
        return turn

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
            turn, self._writers = self._writers, None
        if turn is not None and turn.pid == os.getpid():
            turn.close()
        for connection in connections:
            try:
                connection.close()
            except sqlite3.ProgrammingError:
                pass  # created by another thread that is still using it; it closes on exit
        self._local = threading.local()

    def start_background(self) -> None:
        if self._upkeep is not None and self._upkeep[0] == os.getpid() and self._upkeep[1].is_alive():
            return
        stop = threading.Event()
        thread = threading.Thread(target=self._checkpoints, args=(stop,), name=CHECKPOINT, daemon=True)
        self._upkeep = (os.getpid(), thread, stop)
        thread.start()

    def stop_background(self) -> None:
        if self._upkeep is not None and self._upkeep[0] == os.getpid():
            _, thread, stop = self._upkeep
            stop.set()
            thread.join(BUSY_TIMEOUT_SECONDS)

    def checkpoint(self) -> tuple[int, int, int]:
        """Copy what the WAL holds into the database without waiting for anyone (PASSIVE).

        Returns SQLite's (busy, WAL frames, frames checkpointed).
        """
        return self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def _checkpoints(self, stop: threading.Event) -> None:
        name_this_thread(CHECKPOINT)
        while not stop.wait(CHECKPOINT_SECONDS):
            try:
                self.checkpoint()
            except sqlite3.Error as exc:
                log.warning("WAL checkpoint failed: %s", exc)

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

    def admit(self, request: AdmissionRequest) -> Plan | OverBudget | OverRate:
        return self._group_write(lambda connection: _admit(connection, request))

    def record_call(self, record: CallRecord, settlement: Settlement = PLAIN_CALL) -> None:
        self._group_write(lambda connection: _record_call(connection, record, settlement))

    def drop_idempotency(self, claim: IdempotencyClaim, request_id: str) -> None:
        with self._write() as connection:
            connection.execute(
                "DELETE FROM idempotency_keys WHERE customer_id = ? AND idempotency_key = ? AND request_id = ?",
                (claim.customer, claim.key, request_id),
            )

    def claim_idempotency(self, claim: IdempotencyClaim, request_id: str, now: float, hold: float) -> Replay | None:
        with self._write() as connection:
            connection.execute(
                "DELETE FROM idempotency_keys WHERE customer_id = ? AND idempotency_key = ? AND expires_at <= ?",
                (claim.customer, claim.key, now),
            )
            inserted = connection.execute(
                "INSERT INTO idempotency_keys (customer_id, idempotency_key, request_id, state, expires_at, "
                "created_at) VALUES (?, ?, ?, 'in_flight', ?, ?) ON CONFLICT DO NOTHING",
                (claim.customer, claim.key, request_id, now + hold, now),
            )
            if inserted.rowcount == 1:
                return None
            row = connection.execute(
                "SELECT request_id, response, content_type, cost_units, state FROM idempotency_keys "
                "WHERE customer_id = ? AND idempotency_key = ?",
                (claim.customer, claim.key),
            ).fetchone()
            return Replay(row[0], row[1], row[2], row[3], in_flight=row[4] == "in_flight")

    def spend_logs(
        self, customer_id: str | None = None, limit: int = 1000, *, where: SpendLogFilter | None = None, offset: int = 0
    ) -> list[SpendLogRow]:
        clause, params = _log_filter(where or SpendLogFilter(customer_id=customer_id))
        rows = (
            self._connection()
            .execute(
                f"SELECT {_LOG_COLUMNS} FROM spend_logs{clause} ORDER BY created_at DESC, request_id LIMIT ? OFFSET ?",
                (*params, limit, offset),
            )
            .fetchall()
        )
        return [_log_row(row) for row in rows]

    def count_spend_logs(self, where: SpendLogFilter) -> int:
        clause, params = _log_filter(where)
        return self._connection().execute(f"SELECT COUNT(*) FROM spend_logs{clause}", params).fetchone()[0]

    def get_customer(self, user_id: str) -> Customer | None:
        return read_customer(self._connection(), user_id)


def _admit(connection: sqlite3.Connection, request: AdmissionRequest) -> Plan | OverBudget | OverRate:
    """Create the customer if unseen, then reserve or refuse, inside the caller's transaction.

    A known customer costs one read of its accounts; the inserts that create a customer and its
    accounts run only when the read finds some missing (an account exists only for a customer).
    """
    customer, now = request.customer_id, request.now
    scopes = list(dict.fromkeys(limit.scope for limit in request.limits))
    accounts = _accounts(connection, customer, scopes) if scopes else {}
    missing = [scope for scope in scopes if scope not in accounts]
    if missing or not scopes:
        _ensure_customer(connection, customer, now)
        for scope in missing:
            connection.execute(
                "INSERT INTO spend_accounts (user_id, scope) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (customer, scope),
            )
            accounts[scope] = Account()
    if any(account.reserved_units for account in accounts.values()):
        for scope, units in _release_expired(connection, customer, now):
            if scope in accounts:
                held = accounts[scope]
                accounts[scope] = Account(held.spend_units, held.reserved_units - units, held.period_end)
    if request.rate_limits is not None:
        over_rate = budgets.check_rate(request.rate_limits, _rate_usage(connection, customer, now), now)
        if over_rate is not None:
            return over_rate
    pairs = [(limit, accounts.get(limit.scope, Account())) for limit in request.limits]
    decision = budgets.plan_admission(pairs, request.estimate, strict=request.strict, now=now)
    if isinstance(decision, OverBudget):
        return decision
    for limit in request.limits:
        _reserve(connection, request, limit, decision.reservations[limit.scope])
    if request.rate_limits is not None:
        connection.execute(
            "INSERT INTO rate_events (request_id, user_id, at) VALUES (?, ?, ?)",
            (request.request_id, customer, now),
        )
    return decision


def _record_call(connection: sqlite3.Connection, record: CallRecord, settlement: Settlement) -> None:
    """Release, charge, announce and log one call, inside the caller's transaction.

    The reservation is given back in the same statement that adds the cost to its account. The
    call's `spend_tracked` event is its spend-log row itself, marked `announced` (delivered from
    there, `spend.sqlite_outbox.Outbox.claim_stream`); budget events go into the outbox.
    """
    customer, now = record.customer_id, record.ended_at
    holder, released = _release(connection, record.request_id) if settlement.reserved else (None, {})
    if customer is not None and record.status == "success":
        spend = {}
        for charge in settlement.charges:
            freed = released.pop(charge.scope, 0) if holder == customer else 0
            spend[charge.scope] = _charge(connection, customer, charge, record.cost_units, now, freed)
        if settlement.notify is not None and record.priced:
            events = webhook_events.budget_events(settlement.notify, customer, spend[""], now)
            if events:
                # Due at the call's time as its spend-log row keeps it, as its spend_tracked event
                # is: the budget events it raised go after that event, not a rounding error before.
                add_events(connection, events, epoch(iso_timestamp(now)))
    if released:
        _unreserve(connection, holder, list(released.items()))
    if settlement.idempotency is not None:
        _finish_idempotency(connection, settlement, record)
    if settlement.rate_tracked:
        connection.execute(
            "UPDATE rate_events SET tokens = ? WHERE request_id = ?",
            (record.usage.total_tokens, record.request_id),
        )
    _insert_spend_log(connection, record, _announced(record, settlement))


def _announced(record: CallRecord, settlement: Settlement) -> Notify | None:
    """What the call's `spend_tracked` event shows, if it announces one: a charged, priced call
    with webhooks on and `spend_tracked` among the alert types."""
    notify = settlement.notify
    charged = record.customer_id is not None and record.status == "success" and record.priced
    return notify if charged and notify is not None and notify.spend_tracked else None


_LOG_COLUMNS = (
    "request_id, customer_id, model_group, provider_model, deployment_id, prompt_tokens, completion_tokens, "
    "cached_tokens, cache_creation_tokens, reasoning_tokens, cost_units, priced, estimated, status, error, "
    "latency_ms, started_at, created_at, attempts"
)


def _log_filter(where: SpendLogFilter) -> tuple[str, tuple]:
    conditions, params = [], []
    if where.customer_id is not None:
        conditions.append("customer_id = ?")
        params.append(where.customer_id)
    if where.model is not None:
        conditions.append("(model_group = ? OR provider_model = ?)")
        params += [where.model, where.model]
    if where.since is not None:
        conditions.append("created_at >= ?")
        params.append(where.since)
    if where.until is not None:
        conditions.append("created_at < ?")
        params.append(where.until)
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), tuple(params)


def _finish_idempotency(connection: sqlite3.Connection, settlement: Settlement, record: CallRecord) -> None:
    """A served call keeps its key (and answer) for 24 h; a failed or unreplayable one frees it."""
    claim = settlement.idempotency
    if record.status != "success" or settlement.response is None:
        connection.execute(
            "DELETE FROM idempotency_keys WHERE customer_id = ? AND idempotency_key = ? AND request_id = ?",
            (claim.customer, claim.key, record.request_id),
        )
        return
    connection.execute(
        "UPDATE idempotency_keys SET state = 'done', response = ?, content_type = ?, cost_units = ?, expires_at = ? "
        "WHERE customer_id = ? AND idempotency_key = ? AND request_id = ?",
        (
            settlement.response,
            settlement.content_type,
            record.cost_units,
            record.ended_at + IDEMPOTENCY_SECONDS,
            claim.customer,
            claim.key,
            record.request_id,
        ),
    )


def _log_row(row: tuple) -> SpendLogRow:
    values = list(row)
    values[11], values[12] = bool(values[11]), bool(values[12])
    return SpendLogRow(*values)


def _ensure_customer(connection: sqlite3.Connection, user_id: str, now: float, *, account: bool = True) -> None:
    stamp = iso_timestamp(now)
    connection.execute(
        "INSERT INTO customers (user_id, created_at, updated_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (user_id, stamp, stamp),
    )
    if account:
        connection.execute(
            "INSERT INTO spend_accounts (user_id, scope) VALUES (?, '') ON CONFLICT DO NOTHING", (user_id,)
        )


_CHARGE = (
    "INSERT INTO spend_accounts (user_id, scope, spend_units, period_end) VALUES (?1, ?2, ?3, ?4) "
    "ON CONFLICT (user_id, scope) DO UPDATE SET spend_units = CASE "
    "WHEN period_end IS NOT NULL AND period_end <= ?6 THEN excluded.spend_units "
    "ELSE spend_units + excluded.spend_units END, period_end = excluded.period_end, "
    "reserved_units = reserved_units - ?5 RETURNING spend_units"
)


def _charge(connection: sqlite3.Connection, user_id: str, charge, cost_units: int, now: float, released: int) -> int:
    """Add a call's cost to one account (starting a new window if the last one ended) and give
    back the `released` units its reservation held; the new spend.

    A customer that is new, or was deleted while its call ran, is created first.
    """
    params = (user_id, charge.scope, cost_units, charge.window_end, released, now)
    try:
        return connection.execute(_CHARGE, params).fetchone()[0]
    except sqlite3.IntegrityError:  # no such customer (the account's foreign key)
        _ensure_customer(connection, user_id, now, account=False)
        return connection.execute(_CHARGE, params).fetchone()[0]


def _release_expired(connection: sqlite3.Connection, user_id: str, now: float) -> list[tuple[str, int]]:
    """Give back what calls reserved and never settled (their worker died mid-call); (scope, units) each."""
    expired = connection.execute(
        "DELETE FROM reservations WHERE user_id = ? AND expires_at <= ? RETURNING scope, units", (user_id, now)
    ).fetchall()
    _unreserve(connection, user_id, expired)
    return expired


def _release(connection: sqlite3.Connection, request_id: str) -> tuple[str | None, dict[str, int]]:
    """Delete a call's reservations: whose they were, and the units they held by scope."""
    rows = connection.execute(
        "DELETE FROM reservations WHERE request_id = ? RETURNING user_id, scope, units", (request_id,)
    ).fetchall()
    return (rows[0][0] if rows else None), {scope: units for _, scope, units in rows}


def _unreserve(connection: sqlite3.Connection, user_id: str, rows: list) -> None:
    for scope, units in rows:
        connection.execute(
            "UPDATE spend_accounts SET reserved_units = reserved_units - ? WHERE user_id = ? AND scope = ?",
            (units, user_id, scope),
        )


def _accounts(connection: sqlite3.Connection, user_id: str, scopes: list[str]) -> dict[str, Account]:
    marks = ", ".join("?" for _ in scopes)
    rows = connection.execute(
        f"SELECT scope, spend_units, reserved_units, period_end FROM spend_accounts "
        f"WHERE user_id = ? AND scope IN ({marks})",
        (user_id, *scopes),
    ).fetchall()
    return {scope: Account(spend, reserved, period_end) for scope, spend, reserved, period_end in rows}


def _rate_usage(connection: sqlite3.Connection, user_id: str, now: float) -> RateUsage:
    since = now - budgets.RATE_WINDOW_SECONDS
    connection.execute("DELETE FROM rate_events WHERE user_id = ? AND at <= ?", (user_id, since))
    count, tokens, oldest = connection.execute(
        "SELECT COUNT(*), COALESCE(SUM(tokens), 0), MIN(at) FROM rate_events WHERE user_id = ?", (user_id,)
    ).fetchone()
    return RateUsage(count, tokens, oldest)


def _reserve(connection: sqlite3.Connection, request: AdmissionRequest, limit, units: int) -> None:
    """Add the reservation; the statement itself refuses to pass the limit (belt and braces)."""
    cursor = connection.execute(
        "UPDATE spend_accounts SET "
        "spend_units = CASE WHEN period_end IS NOT NULL AND period_end <= :now THEN 0 ELSE spend_units END, "
        "period_end = :window_end, reserved_units = reserved_units + :units "
        "WHERE user_id = :user AND scope = :scope AND "
        "(CASE WHEN period_end IS NOT NULL AND period_end <= :now THEN 0 ELSE spend_units END) "
        "+ reserved_units + :units <= :max",
        {
            "now": request.now,
            "window_end": limit.window_end,
            "units": units,
            "user": request.customer_id,
            "scope": limit.scope,
            "max": limit.max_units,
        },
    )
    if cursor.rowcount != 1:
        raise RuntimeError(f"reservation for {request.customer_id!r} would pass its budget")
    connection.execute(
        "INSERT INTO reservations (request_id, user_id, scope, units, expires_at) VALUES (?, ?, ?, ?, ?)",
        (request.request_id, request.customer_id, limit.scope, units, request.expires_at),
    )


def _insert_spend_log(connection: sqlite3.Connection, record: CallRecord, announced: Notify | None) -> None:
    usage = record.usage
    connection.execute(
        "INSERT INTO spend_logs (request_id, customer_id, model_group, provider_model, deployment_id, "
        "prompt_tokens, completion_tokens, cached_tokens, cache_creation_tokens, reasoning_tokens, "
        "cost_units, priced, estimated, status, error, latency_ms, started_at, created_at, attempts, "
        "announced, key_hash, max_budget_units, soft_budget_units) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            iso_timestamp(record.ended_at),
            record.attempts,
            *_announcement(announced),
        ),
    )


def _announcement(announced: Notify | None) -> tuple[int, str | None, int | None, int | None]:
    """The spend-log columns `announced, key_hash, max_budget_units, soft_budget_units`."""
    if announced is None:
        return 0, None, None, None
    return 1, announced.token, announced.max_budget_units, announced.soft_budget_units
