"""The SQLite backend: one file shared by every gunicorn worker.

- WAL journal, so readers never wait for the writer; `synchronous=NORMAL` (a committed call
  survives any crash of Tollgate; only an OS crash or power cut can lose the last commits).
- Every write transaction starts with `BEGIN IMMEDIATE`, taking the write lock up front, so two
  workers never deadlock upgrading a read lock. Writers first take their turn (`WriterTurn`): a
  thread lock within the process, then `flock` on `<database>-lock` across processes, both of
  which hand over at once, where SQLite's busy handler sleeps in steps of up to 100 ms and turned
  bursts into slow tails. Calls' writes go further: while one thread commits, the writes queued
  behind it are run together by the next, each in its own savepoint, with one commit (group
  commit, `_group_write`). Only the thread that runs a group takes the turn; the others wait each
  on its own event and are woken together when their group committed. (Passing the thread lock
  from waiter to waiter, each taking the GIL in turn, made 10,000 calls held at once queue for
  tens of seconds behind their own already committed writes.)
- Connections are per process, opened on first use (nothing opened before gunicorn forks is ever
  used after it), and pooled: a read or a write borrows one for its statements and gives it back,
  so a worker holding thousands of calls keeps at most POOL_SIZE connections, each with its page
  cache (a connection per thread cost about half a MiB per call held: docs/performance.md). A
  thread that borrows again while holding one (a read inside a transaction) gets the same one.
- Money columns hold decimal text (SQLite's INTEGER stops at 2**63 pico-dollars, $9.2 M); each
  connection defines `units_add`, `units_le` and `units_sum`, which compute on them exactly.
- The WAL is copied back into the database (a checkpoint, with its fsyncs) by a background
  thread in each worker ten times a second (`start_background`), not by whichever call's commit
  happens to pass SQLite's default 1000 pages: that call waited for it, and at one client that
  was the whole p99. Checkpoints stall concurrent commits in proportion to their size, so they
  are kept small by running often (docs/performance.md has the measurement). Should the thread
  not run, SQLite still checkpoints at 10000 pages. Under the gevent worker the checkpoint, and a
  wait for another process's `flock`, run on an OS thread (`os_threads`): on the worker's own
  thread their fsync or wait held up every call it serves (at one client, the p99).
- The WAL's size: SQLite starts the WAL over from its beginning when a writer finds it wholly
  copied, cutting it back to JOURNAL_SIZE_LIMIT (each connection's `journal_size_limit`); one
  within the limit is rewritten in place, with no blocks to allocate. Under steady writes that
  moment comes after the fallback checkpoint (10000 pages), so the WAL settles at about 40 MB. A
  4 MiB limit cut it back at every start-over, to grow again, and truncating it whenever a
  checkpoint had caught up took the writers' turn and two fsyncs ten times a second: the calls
  behind waited 3-4 ms, the whole p99 at one client. At rest (nothing written since the previous
  checkpoint, nothing left to copy) the thread truncates a WAL longer than REST_WAL_BYTES to
  nothing.
- The file is watched: if the path no longer leads to the file the process opened (deleted, or
  replaced by another), or its filesystem is read-only or full, reads and writes raise
  `StoreUnavailable` (calls answer 503, before the upstream: a call reads its customer first) and
  `ping` answers False (readiness 503). The calls' path looks at most once per FILE_CHECK_SECONDS
  (a `stat` and a `statvfs`), `ping` every time. Connections opened afterwards never create a
  missing file. It resumes when the cause is gone: the same file back at its path, space freed,
  or a restart on a database that is there.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import quote

import os_threads
from spend import migrations
from spend.admin import SQLAdmin
from spend.ledger import SQLLedger
from spend.outbox import SQLOutbox
from spend.store import Store, StoreUnavailable, can_write
from thread_names import CHECKPOINT, name_this_thread

log = logging.getLogger("tollgate.store")

BUSY_TIMEOUT_SECONDS = 30.0
CHECKPOINT_SECONDS = 0.1
AUTOCHECKPOINT_PAGES = 10000  # the fallback: ~40 MB of WAL
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes of WAL kept while writes flow
REST_WAL_BYTES = 4 * 1024 * 1024  # bytes of WAL kept at rest
FILE_CHECK_SECONDS = 1.0  # how stale the calls' view of the file's health may be
MIN_FREE_BYTES = 1024 * 1024  # less free space than this on the database's filesystem: full
# Connections per process. Statements take microseconds and the writers take turns, so a few serve
# thousands of calls; more would only add page caches.
POOL_SIZE = 8


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
        """The other processes' part of the turn (the caller holds `threads`). Free, it is taken
        at once; held by another process, it is waited for on an OS thread (`os_threads`)."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # A waiting greenlet is only ever stopped when its worker exits, and the exit releases
            # the lock too: the OS thread never takes it for a writer that is gone.
            os_threads.run(fcntl.flock, self._fd, fcntl.LOCK_EX)

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
    woken: threading.Event = field(default_factory=threading.Event)  # done, or this thread runs the next group


class _Queue(NamedTuple):
    """One process's writes waiting for a group commit, and whether a thread is running them."""

    pid: int
    items: list[_Pending]
    lock: threading.Lock
    leading: threading.Event  # set while a thread runs (or is about to run) the queued writes


def _new_queue() -> _Queue:
    return _Queue(os.getpid(), [], threading.Lock(), threading.Event())


class SQLiteDatabase:
    """One SQLite file: its connections, its writers' turns, its schema and its upkeep (the
    `Database` the roles work on, and the `Engine` of its store)."""

    locks_rows = False  # one writer at a time: a write transaction sees no other writer
    skip_locked = ""

    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()  # `held`: (pid, the connection this thread borrowed)
        self._lock = threading.Lock()
        self._connections: list[tuple[int, sqlite3.Connection]] = []  # (pid that opened it, connection)
        self._idle: tuple[int, queue.LifoQueue, threading.BoundedSemaphore] | None = None  # per process
        self._writers: WriterTurn | None = None
        self._pending = _new_queue()
        self._upkeep: tuple[int, threading.Thread, threading.Event] | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file first opened
        self._file_checked: tuple[float, str | None] = (0.0, None)  # (time.monotonic(), problem)

    # -- connections ---------------------------------------------------------------------

    @contextmanager
    def _borrowed(self) -> Iterator[sqlite3.Connection]:
        """A connection of this process's pool for the `with` block; the one this thread already
        holds when it borrows again. Waits for one while POOL_SIZE are lent out."""
        held = getattr(self._local, "held", None)
        if held is not None and held[0] == os.getpid():
            yield held[1]
            return
        idle, slots = self._pool()
        if not slots.acquire(timeout=BUSY_TIMEOUT_SECONDS):
            raise StoreUnavailable(f"SQLite database {self.path}: no connection free within {BUSY_TIMEOUT_SECONDS:g}s")
        try:
            try:
                connection = idle.get_nowait()
            except queue.Empty:  # fewer than POOL_SIZE opened so far
                connection = self._open()
            self._local.held = (os.getpid(), connection)
            try:
                yield connection
            finally:
                self._local.held = None
                if connection.in_transaction:  # an op that left one open must not lend it on
                    connection.execute("ROLLBACK")
                idle.put(connection)
        finally:
            slots.release()

    def _pool(self) -> tuple[queue.LifoQueue, threading.BoundedSemaphore]:
        """This process's idle connections (last returned first: its page cache is warm) and its
        POOL_SIZE lending slots."""
        pool = self._idle
        if pool is None or pool[0] != os.getpid():
            with self._lock:
                if self._idle is None or self._idle[0] != os.getpid():
                    self._idle = (os.getpid(), queue.LifoQueue(), threading.BoundedSemaphore(POOL_SIZE))
                pool = self._idle
        return pool[1], pool[2]

    def _connection(self) -> sqlite3.Connection:
        """The connection this thread's next statement runs on when no other thread borrows first
        (tests: a trace callback on it)."""
        with self._borrowed() as connection:
            return connection

    def _open(self) -> sqlite3.Connection:
        # Once a file was opened, a connection never creates one: a deleted database stays missing.
        target, uri = (self.path, False) if self._identity is None else (_must_exist(self.path), True)
        connection = sqlite3.connect(
            target, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False, uri=uri
        )
        connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
        connection.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        define_money_functions(connection)
        if self._identity is None:
            self._identity = _identity(self.path)
        with self._lock:
            self._connections.append((os.getpid(), connection))
        return connection

    def read(self, op: Callable[[sqlite3.Connection], Any]) -> Any:
        self._refuse_if_unfit()  # a call reads its customer before the upstream: refused there, nothing is paid
        try:
            with self._borrowed() as connection:
                return op(connection)
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from exc

    def write(self, op: Callable[[sqlite3.Connection], Any]) -> Any:
        self._refuse_if_unfit()
        try:
            return self._group_write(op)
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from exc

    def _refuse_if_unfit(self) -> None:
        problem = self._file_problem()
        if problem is not None:
            raise StoreUnavailable(f"SQLite database {self.path} {problem}")

    def _file_problem(self, now: float | None = None) -> str | None:
        """Why the file cannot take writes (None when it can), looked at afresh at most once per
        FILE_CHECK_SECONDS, or now when `now` is given."""
        checked_at, problem = self._file_checked
        if now is None:
            now = time.monotonic()
            if now - checked_at < FILE_CHECK_SECONDS:
                return problem
        problem = _file_problem(self.path, self._identity)
        self._file_checked = (now, problem)
        return problem

    def check_writable(self) -> None:
        """Raise `StoreUnavailable` unless a write can be made now: the file is still the one
        opened, its filesystem is writable with room, and SQLite lets this process write it (a
        write of the header's `user_version`, rolled back; it takes the writer's turn briefly)."""
        problem = self._file_problem(now=time.monotonic())
        if problem is not None:
            raise StoreUnavailable(f"SQLite database {self.path} {problem}")
        try:
            self.write(_rolled_back_write)
        except _RolledBack:
            return

    @staticmethod
    def units(value: int | None) -> str | None:
        return None if value is None else str(value)

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable:
        return StoreUnavailable(f"SQLite database {self.path}: {exc}")

    def describe(self) -> str:
        return f"SQLite database {os.path.abspath(self.path)}"

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the lock from its first statement (schema changes, tests)."""
        with self._writer_lock(), self._borrowed() as connection:  # the turn first, as a group commit takes them
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
        writes = self._pending
        if writes.pid != os.getpid():
            with self._lock:
                if self._pending.pid != os.getpid():
                    self._pending = _new_queue()
                writes = self._pending
        with writes.lock:
            writes.items.append(item)
            leads = not writes.leading.is_set()
            writes.leading.set()
        if not leads:
            item.woken.wait()  # its group committed, or the thread before hands this one the lead
        if not item.done:
            self._lead(writes, item)
        if item.error is not None:
            raise item.error
        return item.result

    def _lead(self, writes: _Queue, item: _Pending) -> None:
        """Take the turn, run every queued write (`item` among them) as one group, wake them, and
        hand the lead to the first write queued meanwhile."""
        batch: list[_Pending] = []
        try:
            with self._writer_lock():
                with writes.lock:
                    batch = writes.items[:]
                    writes.items.clear()
                self._run_batch(batch)
        except BaseException as exc:
            for queued in batch:
                queued.error, queued.done = queued.error or exc, True
            if not batch:  # the turn was not taken: withdrawn, a write reported failed must not run later
                with writes.lock:
                    writes.items[:] = [queued for queued in writes.items if queued is not item]
            raise
        finally:
            for queued in batch:
                queued.woken.set()
            with writes.lock:
                if writes.items:
                    writes.items[0].woken.set()
                else:
                    writes.leading.clear()

    def _run_batch(self, batch: list[_Pending]) -> None:
        with self._borrowed() as connection:
            self._run_batch_on(connection, batch)

    @staticmethod
    def _run_batch_on(connection: sqlite3.Connection, batch: list[_Pending]) -> None:
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
        for pid, connection in connections:
            if pid != os.getpid():
                continue  # opened before a fork: the parent's to close, never used or closed here
            try:
                connection.close()
            except sqlite3.ProgrammingError:
                pass  # created by another thread that is still using it; it closes on exit
        self._local = threading.local()
        self._idle = None

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
        with self._borrowed() as connection:
            return os_threads.run(_fetch_one, connection, "PRAGMA wal_checkpoint(PASSIVE)")

    def truncate_idle_wal(self, busy: int, frames: int, copied: int) -> bool:
        """After a checkpoint that copied every frame, cut a WAL longer than REST_WAL_BYTES
        back to nothing (TRUNCATE, in the writers' turn, giving up at once if a reader still uses
        it). Returns whether it did. Meant for a WAL at rest: `_checkpoints` calls it once two
        checkpoints in a row found the same frames."""
        if busy or frames == 0 or copied != frames:
            return False
        try:
            if os.path.getsize(f"{self.path}-wal") <= REST_WAL_BYTES:
                return False
        except OSError:
            return False
        with self._writer_lock(), self._borrowed() as connection:  # the turn first, as a group commit takes them
            connection.execute("PRAGMA busy_timeout = 0")
            try:
                (busy, _, _) = os_threads.run(_fetch_one, connection, "PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        return not busy

    def _checkpoints(self, stop: threading.Event) -> None:
        """Checkpoint every CHECKPOINT_SECONDS; truncate the WAL once it is at rest: nothing
        written since the previous checkpoint (see the module's docstring on the WAL's size)."""
        name_this_thread(CHECKPOINT)
        previous = None
        while not stop.wait(CHECKPOINT_SECONDS):
            if self._file_problem() is not None:
                continue  # nothing to copy into a file that is gone; writes are refused meanwhile
            try:
                found = self.checkpoint()
                if found == previous:
                    self.truncate_idle_wal(*found)
                previous = found
            except sqlite3.Error as exc:
                log.warning("WAL checkpoint failed: %s", exc)

    def ping(self) -> bool:
        return can_write(self, log)

    # -- schema --------------------------------------------------------------------------

    def pending_migrations(self) -> list[str]:
        if not os.path.exists(self.path):
            return [migration.label for migration in migrations.load("sqlite")]

        def look(connection: sqlite3.Connection) -> list[str]:
            found = connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations'").fetchone()
            return migrations.pending(connection, migrations.load("sqlite"), has_table=found is not None)

        return self.read(look)

    def migrate(self, report: Callable[[str], None] | None = None) -> list[str]:
        try:
            return self._migrate(report)
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from exc

    def _migrate(self, report: Callable[[str], None] | None) -> list[str]:
        with self._borrowed() as connection:
            self._enable_wal(connection)
        with self.transaction() as connection:
            connection.execute(migrations.TABLE)
            todo = migrations.pending_ones(connection, migrations.load("sqlite"))
            progress = migrations.Progress(report)
            # SQLite calls back every N virtual-machine steps: a long statement reports as it goes.
            connection.set_progress_handler(progress.tick, 100_000)
            try:
                for migration in todo:
                    progress.run(migration, connection)
            finally:
                connection.set_progress_handler(None, 0)
        return [migration.label for migration in todo]

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


def _fetch_one(connection: sqlite3.Connection, statement: str) -> tuple:
    return connection.execute(statement).fetchone()


class _RolledBack(Exception):
    """Undoes `check_writable`'s probe write."""


def _rolled_back_write(connection: sqlite3.Connection) -> None:
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    connection.execute(f"PRAGMA user_version = {int(version)}")  # refused on a read-only database
    raise _RolledBack


def _identity(path: str) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _must_exist(path: str) -> str:
    """`path` as a URI that opens the file read-write and never creates it."""
    return f"file:{quote(os.path.abspath(path))}?mode=rw"


def _file_problem(path: str, identity: tuple[int, int] | None) -> str | None:
    """Why the database at `path` cannot take writes, or None: deleted or replaced since it was
    opened (as `identity`), on a read-only filesystem, the file or its WAL not writable (a rolled
    back write never touches the WAL, so only the file's permission shows it), or a full disk."""
    if identity is None:
        return None
    try:
        status = os.stat(path)
        space = os.statvfs(path)
    except FileNotFoundError:
        return "was deleted while Tollgate had it open: put the file back, or restore a backup and restart"
    except OSError as exc:
        return f"cannot be looked at ({exc.strerror})"
    if (status.st_dev, status.st_ino) != identity:
        return "was replaced by another file while Tollgate had it open: restart to use the new one"
    if space.f_flag & os.ST_RDONLY:
        return "is on a read-only filesystem"
    unwritable = [file for file in (path, f"{path}-wal") if os.path.exists(file) and not os.access(file, os.W_OK)]
    if unwritable:
        return f"is read-only: no write permission on {', '.join(unwritable)}"
    free_blocks = space.f_bfree if os.geteuid() == 0 else space.f_bavail  # root may use the reserve
    if free_blocks * space.f_frsize < MIN_FREE_BYTES:
        return f"is on a full filesystem (less than {MIN_FREE_BYTES // 1024} KiB free)"
    return None


class _UnitsSum:
    """`units_sum(x)`: the exact sum of money values (None over no rows, as SUM)."""

    def __init__(self):
        self.total = None

    def step(self, value) -> None:
        if value is not None:
            self.total = (self.total or 0) + int(value)

    def finalize(self) -> str | None:
        return None if self.total is None else str(self.total)


def define_money_functions(connection: sqlite3.Connection) -> None:
    """Exact arithmetic on money columns (decimal text), as the roles' SQL expects on every engine."""
    connection.create_function("units_add", 2, lambda a, b: str(int(a) + int(b)), deterministic=True)
    connection.create_function("units_le", 2, lambda a, b: int(int(a) <= int(b)), deterministic=True)
    connection.create_aggregate("units_sum", 1, _UnitsSum)


def open_sqlite(database_url: str) -> Store:
    """A store on the SQLite file of `database_url`; nothing is opened until first use."""
    db = SQLiteDatabase(sqlite_path(database_url))
    return Store(engine=db, ledger=SQLLedger(db), admin=SQLAdmin(db), outbox=SQLOutbox(db))
