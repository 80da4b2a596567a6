"""The storage contract, run on every engine (`contract_store`: a SQLite file, a PostgreSQL schema),
then the SQLite engine's own machinery: WAL checkpoints, the writers' turn, group commit."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import sqlite3
import threading
import time
import uuid
from contextlib import closing
from dataclasses import replace

import pytest

import spend.sqlite
from providers.base import Usage
from spend import migrations
from spend.budgets import Estimate, Limit, OverBudget, Plan
from spend.engines import open_store
from spend.sqlite import sqlite_path
from spend.store import (
    PLAIN_CALL,
    AdmissionRequest,
    CallRecord,
    Conflict,
    Customer,
    IdempotencyClaim,
    Replay,
    Settlement,
    SpendLogFilter,
    holder_of,
)
from tests.helpers import sql_rows

HOUR = 3600.0
INT64_MAX = 2**63 - 1
TEN_MILLION_USD = 10_000_000 * 10**12  # pico-dollars: past SQLite's INTEGER, PostgreSQL's BIGINT


def call(customer="c1", cost=1_000, status="success", request_id=None, ended_at=None, **usage) -> CallRecord:
    now = time.time() if ended_at is None else ended_at
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


def admission(record: CallRecord, max_units: int, estimate: Estimate, *, strict=False) -> AdmissionRequest:
    """The admission of `record`'s call against one budget of `max_units` on the customer."""
    return AdmissionRequest(
        record.request_id,
        record.customer_id,
        (Limit("", max_units),),
        estimate,
        now=record.started_at,
        expires_at=record.started_at + 600,
        strict=strict,
    )


def accounts(store, customer: str) -> list[tuple[int, int]]:
    """(spend_units, reserved_units) of each of the customer's accounts, read raw."""
    rows = sql_rows(
        store, "SELECT spend_units, reserved_units FROM spend_accounts WHERE user_id = ? ORDER BY scope", (customer,)
    )
    return [(int(spend), int(reserved)) for spend, reserved in rows]


def reservations(store) -> int:
    return sql_rows(store, "SELECT COUNT(*) FROM reservations")[0][0]


# -- the contract: every engine ----------------------------------------------------------------


def test_first_call_creates_the_customer_with_its_cost(contract_store):
    contract_store.ledger.record_call(call("new", cost=123))
    customer = contract_store.admin.get_customer("new")
    assert (customer.user_id, customer.spend_units, customer.blocked, customer.budget) == ("new", 123, False, None)


def test_calls_add_up_exactly(contract_store):
    for cost in (1, 10**12, 7, 60_000_000_000):
        contract_store.ledger.record_call(call("sum", cost=cost))
    assert contract_store.admin.get_customer("sum").spend_units == 1 + 10**12 + 7 + 60_000_000_000


def test_every_call_writes_one_spend_log_row_with_its_tokens(contract_store):
    record = call("logged", cost=5, prompt_tokens=11, completion_tokens=3, cached_tokens=2, reasoning_tokens=1)
    contract_store.ledger.record_call(record)
    [row] = contract_store.ledger.spend_logs("logged")
    assert (row.request_id, row.customer_id, row.model_group, row.provider_model, row.deployment_id) == (
        record.request_id,
        "logged",
        "gpt",
        "openai/gpt",
        "dep",
    )
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens, row.reasoning_tokens) == (11, 3, 2, 1)
    assert (row.cost_units, row.status, row.priced, row.estimated) == (5, "success", True, False)


def test_failed_call_is_logged_but_creates_and_charges_no_one(contract_store):
    contract_store.ledger.record_call(call("failed", cost=0, status="failure"))
    assert contract_store.admin.get_customer("failed") is None
    assert [row.status for row in contract_store.ledger.spend_logs("failed")] == ["failure"]


def test_call_without_customer_is_logged_only(contract_store):
    contract_store.ledger.record_call(call(None, cost=9))
    assert [row.customer_id for row in contract_store.ledger.spend_logs()] == [None]
    assert contract_store.admin.list_customers(0, 10, None) == ([], 0)


def test_charge_and_log_row_are_all_or_nothing(contract_store):
    def broken(spend: int):  # fails inside the transaction, after the charge and before the log row
        raise RuntimeError("rendering the budget events failed")

    contract_store.ledger.record_call(call("atomic", cost=100))
    with pytest.raises(RuntimeError):
        contract_store.ledger.record_call(call("atomic", cost=100), Settlement(on_spend=broken))
    with pytest.raises(RuntimeError):  # a customer seen first by the failing call is not created either
        contract_store.ledger.record_call(call("never", cost=100), Settlement(on_spend=broken))
    assert contract_store.admin.get_customer("atomic").spend_units == 100
    assert contract_store.admin.get_customer("never") is None
    assert len(contract_store.ledger.spend_logs()) == 1


def test_two_calls_settled_under_one_id_are_both_charged(contract_store):
    """A client's x-request-id sent by two calls at once: the second row keeps the id with a suffix."""
    contract_store.ledger.record_call(call("twice", cost=100, request_id="client-id"))
    contract_store.ledger.record_call(call("twice", cost=100, request_id="client-id"))
    assert contract_store.admin.get_customer("twice").spend_units == 200
    ids = sorted(row.request_id for row in contract_store.ledger.spend_logs("twice"))
    assert ids[0] == "client-id" and ids[1].startswith("client-id.") and len(ids) == 2


def test_a_second_admission_under_the_id_of_a_call_in_flight_is_a_conflict_and_reserves_nothing(contract_store):
    first = call("in-flight", request_id="client-id")
    estimate = Estimate(10, 0, 1)
    assert contract_store.ledger.admit(admission(first, 1_000, estimate)) == Plan({"": 10})
    with pytest.raises(Conflict):
        contract_store.ledger.admit(admission(call("in-flight", request_id="client-id"), 1_000, estimate))
    assert accounts(contract_store, "in-flight") == [(0, 10)]
    assert reservations(contract_store) == 1


def test_the_reservations_of_a_dead_worker_are_given_back(contract_store):
    ledger = contract_store.ledger
    for _ in range(2):
        assert ledger.admit(admission(call("orphan"), 1_000, Estimate(10, 0, 1))) == Plan({"": 10})
    assert ledger.release_held_by(holder_of(os.getpid() + 1)) == 0  # another process's: none
    assert accounts(contract_store, "orphan") == [(0, 20)]
    assert ledger.release_held_by(holder_of(os.getpid())) == 2
    assert accounts(contract_store, "orphan") == [(0, 0)]
    assert reservations(contract_store) == 0


def test_migrate_is_idempotent(contract_store, engine):
    available = [migration.label for migration in migrations.load(engine)]
    assert contract_store.engine.migrate() == []
    assert contract_store.engine.migrate() == []
    assert contract_store.engine.pending_migrations() == []
    versions = [row[0] for row in sql_rows(contract_store, "SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [int(label[:4]) for label in available]


def test_a_new_database_has_every_migration_pending_until_migrated(database_url, engine, stores):
    store = open_store(database_url(engine, "new.db"))
    stores.append(store)
    available = [migration.label for migration in migrations.load(engine)]
    assert store.engine.pending_migrations() == available
    reported = []
    assert store.engine.migrate(reported.append) == available
    assert store.engine.pending_migrations() == []
    assert [line for line in reported if line.endswith("applying")] == [f"migration {x}: applying" for x in available]


def test_customer_deleted_while_its_call_ran_is_created_again_and_charged(contract_store):
    record = call("gone", cost=40)
    assert isinstance(contract_store.ledger.admit(admission(record, 1_000, Estimate(100, 0, 1))), Plan)
    contract_store.admin.delete_customers(["gone"])
    contract_store.ledger.record_call(record, Settlement(reserved=True))
    assert accounts(contract_store, "gone") == [(40, 0)]
    assert reservations(contract_store) == 0
    assert contract_store.admin.get_customer("gone").spend_units == 40


def test_settlement_gives_back_the_reservation_and_charges_the_cost(contract_store):
    first, second = call("held", cost=30), call("held", cost=50)
    for record in (first, second):
        assert contract_store.ledger.admit(admission(record, 10_000, Estimate(1_000, 0, 1))) == Plan({"": 1_000})
    assert accounts(contract_store, "held") == [(0, 2_000)]
    contract_store.ledger.record_call(first, Settlement(reserved=True))
    assert accounts(contract_store, "held") == [(30, 1_000)]
    contract_store.ledger.record_call(second, Settlement(reserved=True))
    assert accounts(contract_store, "held") == [(80, 0)]
    assert reservations(contract_store) == 0


def test_a_failed_call_gives_back_its_reservation_and_charges_nothing(contract_store):
    record = call("refunded", cost=0, status="failure")
    contract_store.ledger.admit(admission(record, 10_000, Estimate(1_000, 0, 1)))
    contract_store.ledger.record_call(record, Settlement(reserved=True))
    assert accounts(contract_store, "refunded") == [(0, 0)]
    assert reservations(contract_store) == 0


def test_admission_refuses_once_spend_and_reservations_reach_the_budget(contract_store):
    contract_store.ledger.record_call(call("capped", cost=900))
    first = contract_store.ledger.admit(admission(call("capped"), 1_000, Estimate(500, 0, 1)))
    assert first == Plan({"": 100}, capped=frozenset({""}))
    refused = contract_store.ledger.admit(admission(call("capped"), 1_000, Estimate(500, 0, 1)))
    assert refused == OverBudget("", 900, 1_000)
    assert accounts(contract_store, "capped") == [(900, 100)]


def test_only_one_call_at_a_time_runs_on_a_capped_reservation(contract_store):
    """Budget 600, worst case 91, real cost 60: a call that settles below its worst case frees
    room, which a later call may use in full but not capped while another capped call runs; so
    the budget ends at most one call above its limit however admissions and settlements interleave."""
    ledger, worst, cost = contract_store.ledger, Estimate(51, 2, 20, max_tokens_sent=True), 60
    running: list[CallRecord] = []

    def admit() -> None:
        record = call("tight", cost=cost)
        if isinstance(ledger.admit(admission(record, 600, worst)), Plan):
            running.append(record)
        [(capped,)] = sql_rows(contract_store, "SELECT COUNT(*) FROM reservations WHERE capped")
        assert capped <= 1

    for _ in range(7):  # six reservations of 91 and one capped at the 54 left
        admit()
    assert len(running) == 7
    for _ in range(12):  # settle the oldest call, then try another
        if running:
            ledger.record_call(running.pop(0), Settlement(reserved=True))
        admit()
    for record in running:
        ledger.record_call(record, Settlement(reserved=True))
    spend = contract_store.admin.get_customer("tight").spend_units
    assert 600 - cost < spend <= 600 + cost


# -- money of any size -------------------------------------------------------------------------


def test_spend_past_int64_is_stored_and_summed_exactly(contract_store):
    for cost in (10**20, 10**20, 1):
        contract_store.ledger.record_call(call("rich", cost=cost))
    total = 2 * 10**20 + 1
    assert contract_store.admin.get_customer("rich").spend_units == total
    assert [row.cost_units for row in contract_store.ledger.spend_logs("rich")] == [1, 10**20, 10**20]  # newest first
    [(summed,)] = sql_rows(contract_store, "SELECT units_sum(cost_units) FROM spend_logs WHERE customer_id = 'rich'")
    assert int(summed) == total
    assert accounts(contract_store, "rich") == [(total, 0)]


def test_budgets_past_int64_are_stored_and_read_back_exactly(contract_store):
    now = time.time()
    created = contract_store.admin.create_customer(
        Customer("whale"), {"max_budget_units": TEN_MILLION_USD, "soft_budget_units": TEN_MILLION_USD - 1}, now
    )
    assert TEN_MILLION_USD > INT64_MAX
    assert (created.budget.max_budget_units, created.budget.soft_budget_units) == (TEN_MILLION_USD, TEN_MILLION_USD - 1)
    updated = contract_store.admin.update_customer("whale", {}, {"max_budget_units": 3 * TEN_MILLION_USD + 7}, now)
    assert updated.budget.max_budget_units == 3 * TEN_MILLION_USD + 7
    assert contract_store.admin.get_customer("whale").budget.max_budget_units == 3 * TEN_MILLION_USD + 7
    tier = contract_store.admin.create_budget("enterprise", {"max_budget_units": 10**21 + 3}, now)
    assert tier.max_budget_units == 10**21 + 3
    assert [budget.max_budget_units for budget in contract_store.admin.list_budgets(["enterprise"])] == [10**21 + 3]
    [(raw,)] = sql_rows(contract_store, "SELECT max_budget_units FROM budgets WHERE budget_id = ?", ("enterprise",))
    assert int(raw) == 10**21 + 3


def test_admission_against_a_budget_past_int64_reserves_exactly(contract_store):
    contract_store.ledger.record_call(call("whale", cost=TEN_MILLION_USD))
    limit = TEN_MILLION_USD + 5 * 10**12
    first = call("whale", cost=10**12)
    assert contract_store.ledger.admit(admission(first, limit, Estimate(4 * 10**12, 0, 1))) == Plan({"": 4 * 10**12})
    assert contract_store.ledger.admit(admission(call("whale"), limit, Estimate(4 * 10**12, 0, 1))) == Plan(
        {"": 10**12},
        capped=frozenset({""}),  # what is left of the budget
    )
    assert isinstance(contract_store.ledger.admit(admission(call("whale"), limit, Estimate(1, 0, 1))), OverBudget)
    contract_store.ledger.record_call(first, Settlement(reserved=True))
    assert accounts(contract_store, "whale") == [(TEN_MILLION_USD + 10**12, 10**12)]


# -- idempotency keys --------------------------------------------------------------------------


def test_an_idempotency_key_is_held_while_its_call_runs_then_replays_its_answer(contract_store):
    key, now = IdempotencyClaim("cust", "key-1"), time.time()
    first = call("cust", cost=10**20 + 3, ended_at=now)
    assert contract_store.ledger.claim_idempotency(key, first.request_id, now, 600) is None
    assert contract_store.ledger.claim_idempotency(key, "retry-1", now, 600) == Replay(
        first.request_id, None, None, None, in_flight=True
    )
    answer = b'{"id": "chatcmpl-1"}\x00\xff'
    contract_store.ledger.record_call(
        first, Settlement(idempotency=key, response=answer, content_type="application/json")
    )
    assert contract_store.ledger.claim_idempotency(key, "retry-2", now + 1, 600) == Replay(
        first.request_id, answer, "application/json", 10**20 + 3, in_flight=False
    )
    assert contract_store.admin.get_customer("cust").spend_units == 10**20 + 3  # charged once


def test_an_idempotency_key_is_kept_for_a_day_after_its_call(contract_store):
    key, now = IdempotencyClaim("cust", "key-1"), time.time()
    first = call("cust", ended_at=now)
    contract_store.ledger.claim_idempotency(key, first.request_id, now, 600)
    kept = Settlement(idempotency=key, response=b"{}", content_type="application/json")
    contract_store.ledger.record_call(first, kept)
    assert contract_store.ledger.claim_idempotency(key, "same-day", now + 23 * HOUR, 600) is not None
    assert contract_store.ledger.claim_idempotency(key, "next-day", now + 25 * HOUR, 600) is None


def test_an_idempotency_key_whose_holder_died_is_taken_after_its_hold(contract_store):
    key, now = IdempotencyClaim("cust", "key-1"), time.time()
    assert contract_store.ledger.claim_idempotency(key, "crashed", now, 60) is None
    assert contract_store.ledger.claim_idempotency(key, "too-soon", now + 59, 60).in_flight
    assert contract_store.ledger.claim_idempotency(key, "later", now + 61, 60) is None


def test_idempotency_keys_belong_to_their_customer(contract_store):
    now = time.time()
    assert contract_store.ledger.claim_idempotency(IdempotencyClaim("a", "k"), "ra", now, 600) is None
    assert contract_store.ledger.claim_idempotency(IdempotencyClaim("b", "k"), "rb", now, 600) is None


@pytest.mark.parametrize(
    ("how", "freed"),
    [
        ("dropped by its holder", True),
        ("dropped by another call", False),
        ("its call failed", True),
        ("its answer cannot be replayed", True),
    ],
)
def test_a_key_is_freed_only_by_the_call_that_holds_it(contract_store, how, freed):
    key, now = IdempotencyClaim("cust", "key-1"), time.time()
    holder = call("cust", ended_at=now, status="failure" if how == "its call failed" else "success")
    contract_store.ledger.claim_idempotency(key, holder.request_id, now, 600)
    if how == "dropped by its holder":
        contract_store.ledger.drop_idempotency(key, holder.request_id)
    elif how == "dropped by another call":
        contract_store.ledger.drop_idempotency(key, "someone-else")
    else:  # settled without an answer to keep (a failure, or a stream)
        contract_store.ledger.record_call(holder, Settlement(idempotency=key))
    replay = contract_store.ledger.claim_idempotency(key, "next", now + 1, 600)
    assert (replay is None) == freed


# -- concurrency: threads, processes ------------------------------------------------------------

PER_TOKEN = 3
FULL_CALL = PER_TOKEN * 20  # a call's worst case: 20 output tokens
BUDGET = 10 * FULL_CALL + FULL_CALL // 2  # ten and a half calls


@pytest.mark.parametrize("strict", [False, True], ids=["standard", "strict"])
def test_forty_threads_admitted_at_once_never_spend_past_the_budget(contract_store, strict):
    barrier = threading.Barrier(40)
    plans, errors = [], []

    def one_call():
        record = call("burst", cost=0)
        try:
            barrier.wait(10)
            decision = contract_store.ledger.admit(
                admission(record, BUDGET, Estimate(0, PER_TOKEN, 20, max_tokens_sent=True), strict=strict)
            )
            if isinstance(decision, Plan):
                plans.append(decision)
                # The upstream answers at most the max_tokens sent (lowered in strict mode).
                cost = PER_TOKEN * (decision.max_tokens or 20)
                contract_store.ledger.record_call(replace(record, cost_units=cost), Settlement(reserved=True))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one_call) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    [(spend, reserved)] = accounts(contract_store, "burst")
    assert reserved == 0 and reservations(contract_store) == 0
    assert sum(plan.reservations[""] for plan in plans) <= BUDGET
    assert len(contract_store.ledger.spend_logs("burst")) == len(plans)
    if strict:
        # Ten whole calls, then one lowered to the 10 tokens the half call left can pay for.
        assert spend <= BUDGET
        assert (len(plans), sorted(plan.max_tokens for plan in plans if plan.max_tokens)) == (11, [10])
        assert spend == BUDGET
    else:
        # The eleventh reservation is capped at what is left; its call costs a whole one.
        assert spend <= BUDGET + FULL_CALL
        assert (len(plans), spend) == (11, 11 * FULL_CALL)


def _run_in_children(target, args_per_child, timeout=120) -> list[int]:
    """Run `target(*args)` in a forked process per `args`; their exit codes."""
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=target, args=args) for args in args_per_child]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout)
    return [child.exitcode for child in children]


def _migrate_in_child(url: str, start: float, applied) -> None:
    store = open_store(url)
    try:
        time.sleep(max(0.0, start - time.time()))
        applied.put(store.engine.migrate())
    finally:
        store.engine.close()


def test_processes_starting_at_once_apply_each_migration_exactly_once(database_url, engine, stores):
    url = database_url(engine, "race.db")
    applied = multiprocessing.get_context("fork").Queue()
    start = time.time() + 0.3
    assert _run_in_children(_migrate_in_child, [(url, start, applied)] * 5) == [0] * 5
    labels = sorted(label for _ in range(5) for label in applied.get(timeout=5))
    assert labels == [migration.label for migration in migrations.load(engine)]
    store = open_store(url)
    stores.append(store)
    assert store.engine.pending_migrations() == []
    versions = [row[0] for row in sql_rows(store, "SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [int(label[:4]) for label in labels]
    if engine == "sqlite":
        assert sql_rows(store, "PRAGMA journal_mode") == [("wal",)]


def _charge_from_threads(url: str, threads: int, calls: int) -> None:
    """Half the threads charge plain calls, half admit under a budget and settle: all one customer."""
    store = open_store(url)
    errors = []

    def work(reserving: bool):
        try:
            for _ in range(calls):
                record = call("contended", cost=3)
                if reserving:
                    store.ledger.admit(admission(record, 10**15, Estimate(5, 0, 1)))
                store.ledger.record_call(record, Settlement(reserved=reserving))
        except Exception as exc:
            errors.append(exc)

    try:
        workers = [threading.Thread(target=work, args=(n % 2 == 1,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        store.engine.close()
    if errors:
        raise errors[0]


def test_no_lost_update_across_processes_and_threads(database_url, engine, stores):
    url = database_url(engine, "contended.db")
    store = open_store(url)
    stores.append(store)
    store.engine.migrate()
    processes, threads, calls = 3, 4, 20
    assert _run_in_children(_charge_from_threads, [(url, threads, calls)] * processes) == [0] * processes
    total = processes * threads * calls
    assert store.admin.get_customer("contended").spend_units == total * 3
    assert accounts(store, "contended") == [(total * 3, 0)]
    assert store.ledger.count_spend_logs(SpendLogFilter(customer_id="contended")) == total


def test_a_store_used_after_fork_opens_its_own_connection(contract_store):
    contract_store.ledger.record_call(call("parent", cost=1))

    def in_child():
        try:
            contract_store.ledger.record_call(call("child", cost=2))
        finally:
            contract_store.engine.close()  # the child's own connections; the parent's are left alone

    assert _run_in_children(in_child, [()]) == [0]
    assert contract_store.admin.get_customer("child").spend_units == 2
    contract_store.ledger.record_call(call("parent", cost=1))  # the parent's connections still work
    assert contract_store.admin.get_customer("parent").spend_units == 2


# -- picking the engine ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "described"),
    [
        ("sqlite:///relative.db", "SQLite database " + os.path.abspath("relative.db")),
        ("postgresql://tollgate:secret@db.internal:6543/spend", "PostgreSQL database 'spend' on db.internal:6543"),
        ("postgres://tollgate@db.internal/spend", "PostgreSQL database 'spend' on db.internal:5432"),
    ],
)
def test_open_store_picks_the_engine_from_the_url_without_connecting(url, described):
    store = open_store(url)  # nothing is there to connect to: opening must not try
    try:
        assert store.engine.describe() == described
        assert "secret" not in store.engine.describe()
    finally:
        store.engine.close()


@pytest.mark.parametrize(
    ("url", "path"),
    [("sqlite:///relative.db", "relative.db"), ("sqlite:////abs/path.db", "/abs/path.db"), ("bare.db", "bare.db")],
)
def test_sqlite_urls(url, path):
    assert sqlite_path(url) == path


def test_a_sqlite_url_with_a_host_is_refused():
    with pytest.raises(ValueError, match="sqlite:///relative.db"):
        sqlite_path("sqlite://host/file.db")


# -- the SQLite engine -------------------------------------------------------------------------


def test_group_commit_isolates_a_failing_write_from_the_rest_of_its_batch(sqlite_store):
    sqlite_store.ledger.record_call(call("grouped", cost=1))
    barrier = threading.Barrier(16)
    errors = []

    def broken(spend: int):  # fails inside the write, after its charge
        raise RuntimeError("rendering the budget events failed")

    def write(n: int) -> None:
        barrier.wait()
        try:
            settlement = Settlement(on_spend=broken) if n % 4 == 0 else PLAIN_CALL
            sqlite_store.ledger.record_call(call("grouped", cost=10, request_id=f"r{n}"), settlement)
        except RuntimeError:
            errors.append(n)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(errors) == [0, 4, 8, 12]
    assert sqlite_store.admin.get_customer("grouped").spend_units == 1 + 12 * 10
    assert len(sqlite_store.ledger.spend_logs("grouped")) == 13


def rows_in_database_file(path) -> int:
    """Spend-log rows in the database file itself, ignoring the WAL not yet checkpointed into it."""
    with closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as reader:
        try:
            return reader.execute("SELECT COUNT(*) FROM spend_logs").fetchone()[0]
        except sqlite3.OperationalError:  # not even the schema is checkpointed yet
            return 0


def test_the_wal_is_checkpointed_by_the_background_thread_not_by_calls(sqlite_store):
    path = sqlite_store.engine.path
    for _ in range(200):
        sqlite_store.ledger.record_call(call("busy"))
    assert rows_in_database_file(path) == 0  # no commit of a call paid for a checkpoint
    sqlite_store.engine.start_background()
    try:
        deadline = time.monotonic() + 10
        while rows_in_database_file(path) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rows_in_database_file(path) == 200
    finally:
        sqlite_store.engine.stop_background()


def test_a_write_waits_for_another_processs_write_transaction_to_end(sqlite_store):
    other = sqlite3.connect(sqlite_store.engine.path, isolation_level=None, check_same_thread=False)  # another worker
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO customers (user_id, created_at, updated_at) VALUES ('first', 'now', 'now')")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    try:
        sqlite_store.ledger.record_call(call("second", cost=7))  # waits for the lock instead of failing
    finally:
        release.join()
        other.close()
    assert sqlite_store.admin.get_customer("second").spend_units == 7
    assert sqlite_store.admin.get_customer("first") is not None


def test_a_write_waits_its_turn_while_another_process_holds_the_lock_file(sqlite_store):
    other = os.open(f"{sqlite_store.engine.path}-lock", os.O_RDWR)  # a second open file: as another worker's turn
    fcntl.flock(other, fcntl.LOCK_EX)
    written = threading.Event()

    def write():
        sqlite_store.ledger.record_call(call("waits", cost=5))
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
    assert sqlite_store.admin.get_customer("waits").spend_units == 5


def test_a_write_committed_with_an_earlier_threads_group_does_not_take_the_lock_file(sqlite_store, monkeypatch):
    # A holds the turn; B and C queue behind it; one of them takes the turn and commits the
    # other's write with its own, which then returns without taking the lock file (the other
    # processes' turn) at all.
    db, takers, flock = sqlite_store.engine, [], fcntl.flock

    def recording_flock(fd, operation):
        taken = flock(fd, operation)  # raises when a try without waiting (LOCK_NB) finds it held
        if operation & fcntl.LOCK_EX:
            takers.append(threading.current_thread().name)
        return taken

    monkeypatch.setattr(spend.sqlite.fcntl, "flock", recording_flock)
    a_inside, a_go, b_inside, b_go = (threading.Event() for _ in range(4))

    def write(name, inside=None, go=None):
        def op(connection):
            if inside is not None:
                inside.set()
                assert go.wait(10)
            connection.execute(
                "INSERT INTO customers (user_id, created_at, updated_at) VALUES (?, 'now', 'now')", (name,)
            )

        return threading.Thread(target=db.write, args=(op,), name=name)

    def wait_for_queue(length: int) -> None:
        deadline = time.monotonic() + 10
        while len(db._pending[1]) != length and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(db._pending[1]) == length

    a, b, c = write("a", a_inside, a_go), write("b", b_inside, b_go), write("c")
    a.start()
    assert a_inside.wait(10)
    b.start()
    wait_for_queue(1)
    c.start()
    wait_for_queue(2)
    a_go.set()
    assert b_inside.wait(10)  # B and C run as one group, in the thread that took the turn
    b_go.set()
    for thread in (a, b, c):
        thread.join(10)
    assert [sqlite_store.admin.get_customer(name) is not None for name in "abc"] == [True, True, True]
    # Three writes, two turns of the lock file: A's, and that of whichever of B and C got the
    # thread lock first (not always B: a lock does not queue its waiters in order), which ran both.
    assert len(takers) == 2 and takers[0] == "a" and takers[1] in ("b", "c")


def test_a_write_that_could_not_take_the_lock_file_fails_and_is_not_run_later(sqlite_store, monkeypatch):
    flock, failures = fcntl.flock, [OSError("lock file unavailable")]

    def failing_once(fd, operation):
        if operation & fcntl.LOCK_EX and failures:
            raise failures.pop()
        return flock(fd, operation)

    monkeypatch.setattr(spend.sqlite.fcntl, "flock", failing_once)
    with pytest.raises(OSError, match="lock file unavailable"):
        sqlite_store.ledger.record_call(call("refused", cost=5))
    sqlite_store.ledger.record_call(call("next", cost=7))
    assert sqlite_store.admin.get_customer("refused") is None  # reported failed, so never charged
    assert sqlite_store.admin.get_customer("next").spend_units == 7


def test_a_schema_transaction_holds_the_write_lock_from_its_first_statement(sqlite_store):
    other = sqlite3.connect(sqlite_store.engine.path, isolation_level=None, timeout=0)
    try:
        with sqlite_store.engine.transaction() as connection:
            connection.execute("SELECT 1")  # a read only, yet the lock is held
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # released at the end
        other.execute("ROLLBACK")
    finally:
        other.close()


def test_closing_a_store_releases_its_lock_file_and_database_descriptors(tmp_path):
    def files_open_here() -> list[str]:
        """What this process has open in the test's folder (the database, its WAL, its lock file)."""
        targets = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                targets.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:  # closed meanwhile
                pass
        return [target for target in targets if target.startswith(str(tmp_path))]

    for number in range(5):
        store = open_store(f"sqlite:///{tmp_path / f'spend-{number}.db'}")
        store.engine.migrate()
        store.ledger.record_call(call())
        assert any(target.endswith(f"spend-{number}.db-lock") for target in files_open_here())
        store.engine.close()
        assert files_open_here() == []
