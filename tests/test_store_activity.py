"""The daily rollup in the storage contract, on every engine: what `record_call` and
`record_refusal` add to it, and `daily_activity`, `daily_totals` and `top_customers` reading it.
Then the SQLite migration that fills it from an older database's spend log."""

from __future__ import annotations

import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from providers.base import Usage
from spend import migrations
from spend.engines import open_store
from spend.store import PLAIN_CALL, ActivityFilter, CallRecord, Customer, CustomerSpend, DailyActivity
from spend.transfer import copy_sqlite_to_postgres
from tests.helpers import sql_rows

DAY1, DAY2, DAY3 = "2026-11-29", "2026-11-30", "2026-12-01"
HUGE = 10**20 + 3  # pico-dollars past SQLite's INTEGER and PostgreSQL's BIGINT


def at(day: str, hour: int = 12) -> float:
    return datetime.fromisoformat(f"{day}T{hour:02d}:00:00").replace(tzinfo=UTC).timestamp()


def call(customer="c1", day=DAY1, cost=1_000, model="gpt", status="success", hour=12, **usage) -> CallRecord:
    moment = at(day, hour)
    return CallRecord(
        request_id=str(uuid.uuid4()),
        customer_id=customer,
        model_group=model,
        provider_model=f"openai/{model}-2024",
        deployment_id="dep",
        usage=Usage(**usage),
        cost_units=cost,
        started_at=moment,
        ended_at=moment,
        status=status,
    )


def refusal(customer="c1", day=DAY1, model="gpt") -> CallRecord:
    moment = at(day)
    return CallRecord(str(uuid.uuid4()), customer, model, "", "", Usage(), 0, moment, moment, status="failure",
                      error="budget_exceeded: over budget", attempts=0)  # fmt: skip


def test_a_charged_call_adds_its_spend_tokens_and_one_success_to_its_day(contract_store):
    ledger = contract_store.ledger
    ledger.record_call(call(cost=5, prompt_tokens=11, completion_tokens=3, cached_tokens=2, cache_creation_tokens=1))
    ledger.record_call(call(cost=7, prompt_tokens=1, completion_tokens=1))
    [row] = ledger.daily_activity(None, DAY1, DAY1)
    assert row == DailyActivity(DAY1, "c1", "gpt", "openai/gpt-2024", 12, 12, 4, 2, 1, 2, 2, 0)
    assert (row.provider, row.total_tokens) == ("openai", 16)


def test_failed_and_refused_calls_count_as_failed_requests_with_no_spend(contract_store):
    ledger = contract_store.ledger
    ledger.record_call(call(cost=9, prompt_tokens=3, status="failure"))
    ledger.record_refusal(refusal())
    rows = ledger.daily_activity(["c1"], DAY1, DAY1)
    assert [(r.provider_model, r.spend_units, r.api_requests, r.failed_requests) for r in rows] == [
        ("", 0, 1, 1),
        ("openai/gpt-2024", 0, 1, 1),
    ]
    assert rows[0].provider is None


def test_a_refusal_is_a_spend_log_row_and_nothing_else(contract_store):
    record = refusal("refused")
    contract_store.ledger.record_refusal(record)
    [row] = contract_store.ledger.spend_logs("refused")
    assert (row.request_id, row.status, row.cost_units, row.error, row.attempts) == (
        record.request_id,
        "failure",
        0,
        "budget_exceeded: over budget",
        0,
    )
    assert contract_store.admin.get_customer("refused") is None
    assert sql_rows(contract_store, "SELECT COUNT(*) FROM spend_accounts") == [(0,)]


def test_days_are_utc_days_of_the_call_end(contract_store):
    ledger = contract_store.ledger
    ledger.record_call(call(day=DAY1, hour=23))
    ledger.record_call(call(day=DAY2, hour=0))
    assert [row.day for row in ledger.daily_activity(None, DAY1, DAY2)] == [DAY2, DAY1]
    assert [row.day for row in ledger.daily_activity(None, DAY2, DAY2)] == [DAY2]


def test_calls_charged_to_nobody_have_a_row_of_their_own(contract_store):
    contract_store.ledger.record_call(call(None, cost=4))
    contract_store.ledger.record_call(call(None, cost=5))
    [row] = contract_store.ledger.daily_activity(None, DAY1, DAY1)
    assert (row.customer_id, row.spend_units, row.api_requests) == (None, 9, 2)
    assert contract_store.ledger.daily_activity(["c1"], DAY1, DAY1) == []


def test_daily_activity_filters_customers_models_and_days_and_carries_the_alias(contract_store):
    ledger = contract_store.ledger
    contract_store.admin.create_customer(Customer("acme", alias="Acme Inc"), None, at(DAY1))
    for customer, model, day in [("acme", "gpt", DAY1), ("acme", "claude", DAY2), ("bob", "gpt", DAY2),
                                 ("eve", "gpt", DAY3)]:  # fmt: skip
        ledger.record_call(call(customer, day, model=model))
    rows = ledger.daily_activity(None, DAY1, DAY3)
    assert [(r.day, r.customer_id, r.model_group) for r in rows] == [
        (DAY3, "eve", "gpt"),
        (DAY2, "acme", "claude"),
        (DAY2, "bob", "gpt"),
        (DAY1, "acme", "gpt"),
    ]
    assert {r.customer_id: r.alias for r in rows} == {"acme": "Acme Inc", "bob": None, "eve": None}
    assert [r.customer_id for r in ledger.daily_activity(["acme", "bob"], DAY2, DAY2)] == ["acme", "bob"]
    assert [r.customer_id for r in ledger.daily_activity(None, DAY1, DAY3, exclude=["acme", "eve"])] == ["bob"]
    assert [r.model_group for r in ledger.daily_activity(None, DAY1, DAY3, "claude")] == ["claude"]
    assert [r.day for r in ledger.daily_activity(None, DAY1, DAY3, "openai/gpt-2024")] == [DAY3, DAY2, DAY1]
    assert ledger.daily_activity([], DAY1, DAY3) == []


def test_daily_totals_sum_each_day_exactly(contract_store):
    ledger = contract_store.ledger
    ledger.record_call(call("a", DAY1, cost=HUGE, prompt_tokens=2))
    ledger.record_call(call("b", DAY1, cost=HUGE, model="other", completion_tokens=5))
    ledger.record_refusal(refusal("b", DAY1))
    ledger.record_call(call("a", DAY3, cost=1))
    totals = ledger.daily_totals(ActivityFilter(DAY1, DAY3))
    assert [(t.day, t.customer_id, t.spend_units, t.api_requests, t.failed_requests) for t in totals] == [
        (DAY3, None, 1, 1, 0),
        (DAY1, None, 2 * HUGE, 3, 1),
    ]
    assert (totals[1].prompt_tokens, totals[1].completion_tokens) == (2, 5)
    assert [t.spend_units for t in ledger.daily_totals(ActivityFilter(DAY1, DAY3, ("b",)))] == [HUGE]
    assert ledger.daily_totals(ActivityFilter(DAY2, DAY2)) == []


def test_daily_breakdown_sums_per_customer_or_per_model(contract_store):
    ledger = contract_store.ledger
    contract_store.admin.create_customer(Customer("acme", alias="Acme Inc"), None, at(DAY1))
    ledger.record_call(call("acme", DAY1, cost=HUGE, model="gpt", prompt_tokens=1))
    ledger.record_call(call("acme", DAY1, cost=2, model="claude", prompt_tokens=2))
    ledger.record_call(call(None, DAY1, cost=3, model="gpt"))
    ledger.record_refusal(refusal("bob", DAY1, model="gpt"))
    ledger.record_call(call("bob", DAY2, cost=4, model="gpt"))
    where = ActivityFilter(DAY1, DAY2)
    assert [
        (r.day, r.customer_id, r.spend_units, r.api_requests, r.failed_requests, r.alias, r.model_group)
        for r in ledger.daily_breakdown(where, "customer")
    ] == [  # fmt: skip
        (DAY2, "bob", 4, 1, 0, None, ""),
        (DAY1, None, 3, 1, 0, None, ""),
        (DAY1, "acme", HUGE + 2, 2, 0, "Acme Inc", ""),
        (DAY1, "bob", 0, 1, 1, None, ""),
    ]
    assert [
        (r.day, r.model_group, r.provider_model, r.customer_id, r.spend_units, r.api_requests)
        for r in ledger.daily_breakdown(where, "model")
    ] == [  # fmt: skip
        (DAY2, "gpt", "openai/gpt-2024", None, 4, 1),
        (DAY1, "claude", "openai/claude-2024", None, 2, 1),
        (DAY1, "gpt", "", None, 0, 1),
        (DAY1, "gpt", "openai/gpt-2024", None, HUGE + 3, 2),
    ]
    only_acme = ActivityFilter(DAY1, DAY2, ("acme",), model="gpt")
    assert [r.spend_units for r in ledger.daily_breakdown(only_acme, "model")] == [HUGE]
    with pytest.raises(ValueError):
        ledger.daily_breakdown(where, "provider")


def test_top_customers_are_ordered_by_exact_spend_over_the_days(contract_store):
    ledger = contract_store.ledger
    for customer, cost, day in [("small", 1, DAY1), ("huge", HUGE, DAY1), ("huger", HUGE + 1, DAY2),
                                ("huge", 0, DAY2), ("late", 10**15, DAY3)]:  # fmt: skip
        ledger.record_call(call(customer, day, cost=cost))
    ledger.record_call(call(None, DAY1, cost=HUGE * 2))  # charged to nobody: not a customer
    ledger.record_refusal(refusal("small", DAY2))
    assert ledger.top_customers(DAY1, DAY2, 100) == [
        CustomerSpend("huger", 1, HUGE + 1),
        CustomerSpend("huge", 2, HUGE),
        CustomerSpend("small", 2, 1),
    ]
    assert ledger.top_customers(DAY1, DAY3, 2) == [CustomerSpend("huger", 1, HUGE + 1), CustomerSpend("huge", 2, HUGE)]
    assert ledger.top_customers(DAY3, DAY3, 100) == [CustomerSpend("late", 1, 10**15)]


def test_a_call_rolled_back_leaves_no_rollup(contract_store):
    contract_store.ledger.record_call(call(cost=5))

    def settle_then_fail(tx):  # the whole settlement, rollup included, then a failure before the commit
        contract_store.ledger._record_call(tx, call(cost=7), PLAIN_CALL)
        raise RuntimeError("the transaction fails after the rollup was written")

    with pytest.raises(RuntimeError):
        contract_store.engine.write(settle_then_fail)
    [row] = contract_store.ledger.daily_activity(None, DAY1, DAY1)
    assert (row.spend_units, row.api_requests) == (5, 1)


# -- SQLite: the migration fills the rollup from the spend log -----------------------------------


def test_migration_fills_the_rollup_from_an_older_databases_spend_log(tmp_path, stores):
    path = tmp_path / "old.db"
    older = [m for m in migrations.load("sqlite") if m.name != "daily_activity"]
    old = open_store(f"sqlite:///{path}")
    stores.append(old)
    with old.engine.transaction() as connection:
        connection.execute(migrations.TABLE)
        progress = migrations.Progress(None)
        for migration in older:
            progress.run(migration, connection)
    rows = [("a", DAY1, "success", str(HUGE)), ("a", DAY1, "success", "2"), ("a", DAY1, "failure", "0"),
            (None, DAY1, "success", "5"), ("b", DAY2, "failure", "0")]  # fmt: skip
    with old.engine.transaction() as connection:
        for n, (customer, day, status, cost) in enumerate(rows):
            connection.execute(
                "INSERT INTO spend_logs (request_id, customer_id, model_group, provider_model, deployment_id, "
                "prompt_tokens, completion_tokens, cached_tokens, cache_creation_tokens, reasoning_tokens, cost_units, "
                "priced, estimated, status, latency_ms, started_at, created_at) "
                "VALUES (?, ?, 'gpt', 'openai/gpt', 'd', 3, 2, 1, 0, 0, ?, 1, 0, ?, 5, ?, ?)",
                (f"r{n}", customer, cost, status, f"{day}T10:00:00.000000Z", f"{day}T10:00:01.000000Z"),
            )
    old.engine.close()
    migrated = open_store(f"sqlite:///{path}")
    stores.append(migrated)
    assert migrated.engine.migrate() == ["0008_daily_activity"]
    assert migrated.ledger.daily_activity(None, DAY1, DAY2) == [
        DailyActivity(DAY2, "b", "gpt", "openai/gpt", 0, 3, 2, 1, 0, 1, 0, 1),
        DailyActivity(DAY1, None, "gpt", "openai/gpt", 5, 3, 2, 1, 0, 1, 1, 0),
        DailyActivity(DAY1, "a", "gpt", "openai/gpt", HUGE + 2, 9, 6, 3, 0, 3, 2, 1),
    ]
    migrated.ledger.record_call(call("a", DAY1, cost=1, model="gpt"))
    assert migrated.ledger.top_customers(DAY1, DAY2, 10)[0] == CustomerSpend("a", 4, HUGE + 3)


def test_an_old_database_file_opened_by_sqlite_alone_still_migrates(tmp_path, stores):
    """Migration 0008 needs only the money functions every Tollgate connection defines."""
    path = tmp_path / "bare.db"
    connection = sqlite3.connect(path)
    connection.execute(migrations.TABLE)
    connection.commit()
    connection.close()
    store = open_store(f"sqlite:///{path}")
    stores.append(store)
    assert "0008_daily_activity" in store.engine.migrate()


def test_copy_sqlite_brings_the_rollup_into_postgresql(tmp_path, database_url, stores):
    source = open_store(f"sqlite:///{tmp_path / 'source.db'}")
    stores.append(source)
    source.engine.migrate()
    source.ledger.record_call(call("a", DAY1, cost=HUGE, prompt_tokens=4))
    source.ledger.record_refusal(refusal("a", DAY2))
    source.engine.close()
    target_url = database_url("postgres")
    counts = copy_sqlite_to_postgres(str(tmp_path / "source.db"), target_url, lambda line: None)
    assert counts["daily_activity"] == 2
    target = open_store(target_url)
    stores.append(target)
    assert target.ledger.daily_activity(None, DAY1, DAY2) == source.ledger.daily_activity(None, DAY1, DAY2)
    assert target.ledger.top_customers(DAY1, DAY2, 10) == [CustomerSpend("a", 2, HUGE)]


def test_calls_settled_at_once_all_land_in_their_shared_row(contract_store):
    """Threads settling calls of one customer (and of nobody) at once: every call counted once,
    no deadlock, on SQLite's group commit and under PostgreSQL's row locks alike."""

    def settle(n: int) -> None:
        for i in range(25):
            contract_store.ledger.record_call(call("shared" if i % 2 else None, cost=n * 100 + i, prompt_tokens=1))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(settle, range(8)))
    rows = {row.customer_id: row for row in contract_store.ledger.daily_activity(None, DAY1, DAY1)}
    expected = {customer: [n * 100 + i for n in range(8) for i in range(25) if (i % 2 == 1) == (customer == "shared")]
                for customer in ("shared", None)}  # fmt: skip
    for customer, costs in expected.items():
        assert (rows[customer].api_requests, rows[customer].spend_units) == (len(costs), sum(costs))
    assert rows["shared"].spend_units == contract_store.admin.get_customer("shared").spend_units
