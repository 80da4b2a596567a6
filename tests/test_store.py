"""The spend-store contract, run against every backend (SQLite file for now)."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
import time
import uuid

import pytest

from providers.base import Usage
from spend import migrations
from spend.sqlite import SQLiteStore, sqlite_path
from spend.store import CallRecord, open_store


@pytest.fixture(params=["sqlite-file"])
def store(request, tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'spend.db'}")
    store.engine.migrate()
    yield store
    store.engine.close()


def call(customer="c1", cost=1_000, status="success", request_id=None, **usage) -> CallRecord:
    now = time.time()
    return CallRecord(
        request_id=request_id or str(uuid.uuid4()),
        customer_id=customer,
        model_group="gpt",
        provider_model="openai/gpt",
        deployment_id="dep",
        usage=Usage(**usage),
        cost_units=cost,
        started_at=now,
        ended_at=now,
        status=status,
    )


def test_first_call_creates_the_customer_with_its_cost(store):
    store.ledger.record_call(call("new", cost=123))
    customer = store.admin.get_customer("new")
    assert (customer.user_id, customer.spend_units, customer.blocked, customer.budget) == ("new", 123, False, None)


def test_calls_add_up_exactly(store):
    for cost in (1, 10**12, 7, 60_000_000_000):
        store.ledger.record_call(call("sum", cost=cost))
    assert store.admin.get_customer("sum").spend_units == 1 + 10**12 + 7 + 60_000_000_000


def test_every_call_writes_one_spend_log_row_with_its_tokens(store):
    store.ledger.record_call(call("logged", cost=5, prompt_tokens=11, completion_tokens=3))
    [row] = store.ledger.spend_logs("logged")
    assert (row.prompt_tokens, row.completion_tokens, row.cost_units, row.status) == (11, 3, 5, "success")


def test_failed_call_is_logged_but_creates_and_charges_no_one(store):
    store.ledger.record_call(call("failed", cost=0, status="failure"))
    assert store.admin.get_customer("failed") is None
    assert [row.status for row in store.ledger.spend_logs("failed")] == ["failure"]


def test_call_without_customer_is_logged_only(store):
    store.ledger.record_call(call(None, cost=9))
    assert [row.customer_id for row in store.ledger.spend_logs()] == [None]


def test_charge_and_log_row_are_all_or_nothing(store):
    store.ledger.record_call(call("atomic", cost=100, request_id="same-id"))
    with pytest.raises(sqlite3.IntegrityError):
        store.ledger.record_call(call("atomic", cost=100, request_id="same-id"))
    assert store.admin.get_customer("atomic").spend_units == 100


def test_migrate_is_idempotent(store):
    store.engine.migrate()
    store.engine.migrate()
    versions = [m.version for m in migrations.load("sqlite")]
    assert versions == sorted(set(versions)) and versions[0] == 1


def _migrate_in_child(path: str, start: float) -> None:
    time.sleep(max(0.0, start - time.time()))
    SQLiteStore(path).migrate()


def test_workers_starting_at_once_apply_each_migration_exactly_once(tmp_path):
    path = str(tmp_path / "race.db")
    start = time.time() + 0.5
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_migrate_in_child, args=(path, start)) for _ in range(6)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [child.exitcode for child in children] == [0] * 6
    rows = sqlite3.connect(path).execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [row[0] for row in rows] == [m.version for m in migrations.load("sqlite")]
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)


def _charge_in_child(path: str, threads: int, calls: int) -> None:
    store = SQLiteStore(path)

    def work():
        for _ in range(calls):
            store.ledger.record_call(call("contended", cost=3))

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def test_no_lost_update_across_processes_and_threads(tmp_path):
    path = str(tmp_path / "contended.db")
    SQLiteStore(path).migrate()
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_charge_in_child, args=(path, 4, 50)) for _ in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
    assert [child.exitcode for child in children] == [0] * 4
    store = SQLiteStore(path)
    assert store.admin.get_customer("contended").spend_units == 4 * 4 * 50 * 3
    assert len(store.ledger.spend_logs("contended", limit=10_000)) == 800


def test_store_used_after_fork_opens_its_own_connection(tmp_path):
    path = str(tmp_path / "fork.db")
    parent = SQLiteStore(path)
    parent.migrate()
    parent.record_call(call("parent", cost=1))
    context = multiprocessing.get_context("fork")
    child = context.Process(target=lambda: parent.record_call(call("child", cost=2)))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert parent.get_customer("child").spend_units == 2


@pytest.mark.parametrize(
    ("url", "path"),
    [("sqlite:///relative.db", "relative.db"), ("sqlite:////abs/path.db", "/abs/path.db"), ("bare.db", "bare.db")],
)
def test_sqlite_urls(url, path):
    assert sqlite_path(url) == path


def test_postgres_url_is_refused_until_supported():
    with pytest.raises(ValueError, match="PostgreSQL"):
        open_store("postgresql://localhost/test")


def test_group_commit_isolates_a_failing_write_from_the_rest_of_its_batch(store):
    store.ledger.record_call(call("grouped", cost=1, request_id="taken"))
    barrier = threading.Barrier(16)
    errors = []

    def write(n: int) -> None:
        barrier.wait()
        try:
            store.ledger.record_call(call("grouped", cost=10, request_id="taken" if n % 4 == 0 else f"r{n}"))
        except sqlite3.IntegrityError:
            errors.append(n)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(errors) == [0, 4, 8, 12]
    assert store.admin.get_customer("grouped").spend_units == 1 + 12 * 10
    assert len(store.ledger.spend_logs("grouped")) == 13


def accounts(store, customer: str) -> list[tuple[int, int]]:
    """(spend_units, reserved_units) of each of the customer's accounts."""
    query = "SELECT spend_units, reserved_units FROM spend_accounts WHERE user_id = ? ORDER BY scope"
    return store._connection().execute(query, (customer,)).fetchall()


def test_customer_deleted_while_its_call_ran_is_created_again_and_charged(store):
    from spend.budgets import Estimate, Limit
    from spend.store import AdmissionRequest, Settlement

    record = call("gone", cost=40)
    limit = Limit("", 1_000)
    store.ledger.admit(AdmissionRequest(record.request_id, "gone", (limit,), Estimate(100, 0, 1), now=record.started_at,
                                 expires_at=record.started_at + 600))  # fmt: skip
    store.admin.delete_customers(["gone"])
    store.ledger.record_call(record, Settlement(reserved=True))
    assert accounts(store, "gone") == [(40, 0)]
    assert store._connection().execute("SELECT COUNT(*) FROM reservations").fetchone() == (0,)


def test_settlement_gives_back_the_reservation_and_charges_the_cost(store):
    from spend.budgets import Estimate, Limit
    from spend.store import AdmissionRequest, Settlement

    first, second = call("held", cost=30), call("held", cost=50)
    for record in (first, second):
        store.ledger.admit(AdmissionRequest(record.request_id, "held", (Limit("", 10_000),), Estimate(1_000, 0, 1),
                                     now=record.started_at, expires_at=record.started_at + 600))  # fmt: skip
    assert accounts(store, "held") == [(0, 2_000)]
    store.ledger.record_call(first, Settlement(reserved=True))
    assert accounts(store, "held") == [(30, 1_000)]
    store.ledger.record_call(second, Settlement(reserved=True))
    assert accounts(store, "held") == [(80, 0)]


def rows_in_database_file(path) -> int:
    """Spend-log rows in the database file itself, ignoring the WAL not yet checkpointed into it."""
    with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as reader:
        try:
            return reader.execute("SELECT COUNT(*) FROM spend_logs").fetchone()[0]
        except sqlite3.OperationalError:  # not even the schema is checkpointed yet
            return 0


def test_the_wal_is_checkpointed_by_the_background_thread_not_by_calls(tmp_path):
    path = tmp_path / "spend.db"
    store = open_store(f"sqlite:///{path}")
    store.engine.migrate()
    for _ in range(200):
        store.ledger.record_call(call("busy"))
    assert rows_in_database_file(path) == 0  # no commit of a call paid for a checkpoint
    store.engine.start_background()
    try:
        deadline = time.monotonic() + 10
        while rows_in_database_file(path) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rows_in_database_file(path) == 200
    finally:
        store.engine.stop_background()
        store.engine.close()


def test_a_write_waits_for_another_processs_write_transaction_to_end(tmp_path):
    path = tmp_path / "spend.db"
    store = open_store(f"sqlite:///{path}")
    store.engine.migrate()
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)  # as another worker would
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO customers (user_id, created_at, updated_at) VALUES ('first', 'now', 'now')")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    try:
        store.ledger.record_call(call("second", cost=7))  # waits for the lock instead of failing
    finally:
        release.join()
        other.close()
    assert store.admin.get_customer("second").spend_units == 7
    assert store.admin.get_customer("first") is not None
    store.engine.close()


def test_a_write_waits_its_turn_while_another_process_holds_the_lock_file(tmp_path):
    import fcntl
    import os

    path = tmp_path / "spend.db"
    store = open_store(f"sqlite:///{path}")
    store.engine.migrate()
    other = os.open(f"{path}-lock", os.O_RDWR)  # a second open file: as another worker's turn
    fcntl.flock(other, fcntl.LOCK_EX)
    written = threading.Event()

    def write():
        store.ledger.record_call(call("waits", cost=5))
        written.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert not written.wait(0.3)  # not before the other process's turn ends
    finally:
        fcntl.flock(other, fcntl.LOCK_UN)
        os.close(other)
    writer.join(10)
    assert written.is_set()
    assert store.admin.get_customer("waits").spend_units == 5
    store.engine.close()


def test_a_write_committed_with_an_earlier_threads_group_does_not_take_the_lock_file(tmp_path, monkeypatch):
    # A holds the turn; B and C queue behind it; B takes the turn and commits C's write with its
    # own. C then returns without taking the lock file (the other processes' turn) at all.
    import fcntl

    import spend.sqlite

    takers = []
    flock = fcntl.flock

    def recording_flock(fd, operation):
        if operation == fcntl.LOCK_EX:
            takers.append(threading.current_thread().name)
        return flock(fd, operation)

    monkeypatch.setattr(spend.sqlite.fcntl, "flock", recording_flock)
    store = open_store(f"sqlite:///{tmp_path / 'spend.db'}")
    store.engine.migrate()
    a_inside, a_go, b_inside, b_go = (threading.Event() for _ in range(4))

    def write(name, inside=None, go=None):
        def op(connection):
            if inside is not None:
                inside.set()
                assert go.wait(10)
            connection.execute(
                "INSERT INTO customers (user_id, created_at, updated_at) VALUES (?, 'now', 'now')", (name,)
            )

        return threading.Thread(target=store._group_write, args=(op,), name=name)

    def wait_for_queue(length: int) -> None:
        deadline = time.monotonic() + 10
        while len(store._pending[1]) != length and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(store._pending[1]) == length

    a, b, c = write("a", a_inside, a_go), write("b", b_inside, b_go), write("c")
    takers.clear()  # the migration's
    a.start()
    assert a_inside.wait(10)
    b.start()
    wait_for_queue(1)
    c.start()
    wait_for_queue(2)
    a_go.set()
    assert b_inside.wait(10)  # B runs the group of B and C
    b_go.set()
    for thread in (a, b, c):
        thread.join(10)
    assert [store.admin.get_customer(name) is not None for name in "abc"] == [True, True, True]
    assert sorted(takers) == ["a", "b"]
    store.engine.close()


def test_a_write_that_could_not_take_the_lock_file_fails_and_is_not_run_later(tmp_path, monkeypatch):
    import fcntl

    import spend.sqlite

    store = open_store(f"sqlite:///{tmp_path / 'spend.db'}")
    store.engine.migrate()
    flock, failures = fcntl.flock, [OSError("lock file unavailable")]

    def failing_once(fd, operation):
        if operation == fcntl.LOCK_EX and failures:
            raise failures.pop()
        return flock(fd, operation)

    monkeypatch.setattr(spend.sqlite.fcntl, "flock", failing_once)
    with pytest.raises(OSError):
        store.ledger.record_call(call("refused", cost=5))
    store.ledger.record_call(call("next", cost=7))
    assert store.admin.get_customer("refused") is None  # reported failed, so never charged
    assert store.admin.get_customer("next").spend_units == 7
    store.engine.close()


def test_closing_a_store_releases_its_lock_file_descriptor(tmp_path):
    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_descriptors()
    for number in range(20):
        store = open_store(f"sqlite:///{tmp_path / f'spend-{number}.db'}")
        store.engine.migrate()
        store.ledger.record_call(call())
        store.engine.close()
    assert open_descriptors() == before
