"""The outbox contract on every engine: events written with their charge, claimed with a lease in
the order they were written, retried with backoff until dead, requeued, purged once delivered.
Then SQLite's own: a claim with nothing due stays out of the writers' way, and the migration
from the spend-log stream (0005) to the plain outbox keeps every event still to be posted."""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
import uuid
from contextlib import closing
from dataclasses import replace
from decimal import Decimal

import psycopg
import pytest

from providers.base import Usage
from spend import migrations
from spend.engines import open_store
from spend.outbox import RETRY_WINDOW_SECONDS, add_events
from spend.store import CallRecord, Charge, Settlement, epoch, iso_timestamp
from tests.helpers import answer_while_the_writer_turn_is_held, sql_rows
from webhooks.events import Notify, announcements, call_event_id, spend_tracked

LEASE = 45.0
DAY = 86_400.0
DUPLICATE = {"sqlite": sqlite3.IntegrityError, "postgres": psycopg.errors.UniqueViolation}
# Event ids that fall as they are written, so the order written is never the order of the ids.
_falling_ids = itertools.count(10**9, -1)


def write_events(store, count: int, now: float) -> list[str]:
    """`count` spend_tracked events inserted at `now` in one transaction, as a call inserts them;
    their ids in the order written."""
    events = [
        spend_tracked(Notify(token="t"), f"c{n}", 1_000, now, event_id=f"evt_{next(_falling_ids):012d}")
        for n in range(count)
    ]
    store.engine.write(lambda tx: add_events(tx, events, now))
    return [event.event_id for event in events]


def ids(events) -> list[str]:
    return [event.event_id for event in events]


def charge(store, customer, cost, notify, now, *, window_end=None, request_id=None, status="success") -> CallRecord:
    """One call settled as `calls.settle` settles it: its cost charged, its events rendered and written."""
    record = CallRecord(
        request_id or str(uuid.uuid4()), customer, "m", "mock/m", "d", Usage(), cost, now, now, status=status
    )
    events, on_spend = announcements(notify, customer, cost, record.request_id, now)
    settlement = Settlement(charges=(Charge("", window_end),), events=events, on_spend=on_spend)
    store.ledger.record_call(record, settlement)
    return record


def written(store) -> list[tuple[str, str]]:
    """(customer, event) of every event in the outbox, in the order written."""
    return [(event.customer_id, event.event) for event in reversed(store.outbox.list(None, 1000))]


# -- claims --------------------------------------------------------------------------------------


def test_a_claim_leases_due_events_once_in_the_order_they_were_written(contract_store):
    now = time.time()
    events = write_events(contract_store, 6, now - 1)
    first = contract_store.outbox.claim(now, LEASE, 4)
    assert ids(first) == events[:4]
    assert [(event.status, event.attempts, event.customer_id) for event in first[:1]] == [("pending", 0, "c0")]
    assert ids(contract_store.outbox.claim(now, LEASE, 10)) == events[4:]
    assert contract_store.outbox.claim(now, LEASE, 10) == []  # all leased
    assert contract_store.outbox.claim(now + LEASE - 1, LEASE, 10) == []
    assert ids(contract_store.outbox.claim(now + LEASE, LEASE, 10)) == events  # the leases ran out


def test_a_claim_takes_events_in_the_order_they_fall_due(contract_store):
    now = time.time()
    [retried] = write_events(contract_store, 1, now - 10)
    contract_store.outbox.claim(now, LEASE, 1)
    contract_store.outbox.failed(retried, "HTTP 500", now - 1)  # its retry falls due after the next two
    fresh = write_events(contract_store, 2, now - 3)
    assert ids(contract_store.outbox.claim(now, LEASE, 10)) == [*fresh, retried]


def test_events_not_yet_due_are_not_claimed(contract_store):
    now = time.time()
    later = write_events(contract_store, 2, now + 60)
    assert contract_store.outbox.claim(now, LEASE, 10) == []
    assert ids(contract_store.outbox.claim(now, LEASE, 10, due_by=now + 60)) == later


def test_a_claim_can_leave_events_due_for_less_than_a_while_to_others(contract_store):
    now = time.time()
    old = write_events(contract_store, 2, now - 5)
    write_events(contract_store, 2, now)
    assert ids(contract_store.outbox.claim(now, LEASE, 10, due_by=now - 2)) == old


def test_release_gives_claimed_events_back_untried(contract_store):
    now = time.time()
    events = write_events(contract_store, 3, now)
    contract_store.outbox.claim(now, LEASE, 10)
    contract_store.outbox.release(events[1:])
    again = contract_store.outbox.claim(now, LEASE, 10)
    assert ids(again) == events[1:]
    assert [event.attempts for event in again] == [0, 0]


def test_delivered_events_are_never_claimed_again(contract_store):
    now = time.time()
    events = write_events(contract_store, 3, now)
    contract_store.outbox.claim(now, LEASE, 10)
    contract_store.outbox.delivered(events[:2], now + 1)
    assert ids(contract_store.outbox.claim(now + LEASE, LEASE, 10)) == events[2:]
    delivered = contract_store.outbox.list("delivered", 10)
    assert sorted(ids(delivered)) == sorted(events[:2])
    assert {(event.attempts, event.last_error) for event in delivered} == {(1, None)}


def test_a_failed_event_is_pending_again_once_its_backoff_has_passed(contract_store):
    now = time.time()
    [event_id] = write_events(contract_store, 1, now)
    contract_store.outbox.claim(now, LEASE, 10)
    assert contract_store.outbox.failed(event_id, "HTTP 500 " + "x" * 600, now + 30) == "pending"
    assert contract_store.outbox.claim(now + 29, LEASE, 10) == []  # backing off
    [again] = contract_store.outbox.claim(now + 30, LEASE, 10)  # due, and no longer leased
    assert (again.event_id, again.status, again.attempts, again.next_attempt_at) == (event_id, "pending", 1, now + 30)
    assert again.last_error.startswith("HTTP 500 ") and len(again.last_error) == 500


@pytest.mark.parametrize(
    ("retry_in", "status"),
    [(RETRY_WINDOW_SECONDS - 1, "pending"), (RETRY_WINDOW_SECONDS, "dead"), (RETRY_WINDOW_SECONDS + DAY, "dead")],
)
def test_a_failed_event_is_dead_once_its_next_try_would_pass_the_retry_window(contract_store, retry_in, status):
    now = time.time()
    [event_id] = write_events(contract_store, 1, now)
    contract_store.outbox.claim(now, LEASE, 10)
    assert contract_store.outbox.failed(event_id, "HTTP 500", now + retry_in) == status
    assert ids(contract_store.outbox.list(status, 10)) == [event_id]
    far_future = now + 10 * DAY
    assert ids(contract_store.outbox.claim(far_future, LEASE, 10)) == ([event_id] if status == "pending" else [])


def test_requeue_makes_dead_events_pending_with_a_fresh_retry_window(contract_store):
    now = time.time()
    dead, pending, delivered = write_events(contract_store, 3, now)
    contract_store.outbox.claim(now, LEASE, 10)
    contract_store.outbox.failed(dead, "HTTP 500", now + RETRY_WINDOW_SECONDS)
    contract_store.outbox.failed(pending, "HTTP 500", now + 60)
    contract_store.outbox.delivered([delivered], now)
    later = now + 2 * DAY
    assert contract_store.outbox.requeue(None, later, RETRY_WINDOW_SECONDS) == 1  # the dead one only
    assert ids(contract_store.outbox.claim(later, LEASE, 10)) == [pending, dead]  # due at +60 s, and now
    assert contract_store.outbox.failed(dead, "HTTP 500", later + RETRY_WINDOW_SECONDS - 1) == "pending"
    # Named events: pending or dead ones, never a delivered one.
    assert contract_store.outbox.requeue([delivered, pending], later, RETRY_WINDOW_SECONDS) == 1
    assert ids(contract_store.outbox.list("delivered", 10)) == [delivered]


def test_purge_deletes_only_delivered_events_past_their_retention(contract_store):
    now = time.time()
    old_delivered = write_events(contract_store, 3, now - 9 * DAY)
    contract_store.outbox.delivered(old_delivered, now - 8 * DAY)
    recent_delivered = write_events(contract_store, 2, now - 9 * DAY)
    contract_store.outbox.delivered(recent_delivered, now - 6 * DAY)  # delivered late: within the retention
    [dead] = write_events(contract_store, 1, now - 30 * DAY)
    assert contract_store.outbox.failed(dead, "HTTP 500", now - 29 * DAY) == "dead"
    old_pending = write_events(contract_store, 2, now - 20 * DAY)
    before = now - 7 * DAY
    assert [contract_store.outbox.purge_delivered(before, 2) for _ in range(3)] == [2, 1, 0]  # at most a batch each
    kept = {event.event_id: event.status for event in contract_store.outbox.list(None, 100)}
    assert kept == {
        **{event_id: "delivered" for event_id in recent_delivered},
        dead: "dead",
        **{event_id: "pending" for event_id in old_pending},
    }


def test_listings_show_the_newest_events_of_a_status(contract_store):
    now = time.time()
    events = write_events(contract_store, 4, now)
    contract_store.outbox.claim(now, LEASE, 10)
    contract_store.outbox.delivered([events[0]], now)
    contract_store.outbox.failed(events[1], "HTTP 500", now + RETRY_WINDOW_SECONDS)
    contract_store.outbox.release(events[2:])
    assert ids(contract_store.outbox.list(None, 10)) == events[::-1]
    assert ids(contract_store.outbox.list(None, 2)) == [events[3], events[2]]
    assert ids(contract_store.outbox.list("pending", 10)) == [events[3], events[2]]
    assert ids(contract_store.outbox.list("delivered", 10)) == [events[0]]
    [dead] = contract_store.outbox.list("dead", 10)
    assert (dead.event_id, dead.attempts, dead.last_error) == (events[1], 1, "HTTP 500")


def test_threads_claiming_at_once_take_every_event_exactly_once(contract_store):
    events = write_events(contract_store, 300, time.time())
    barrier = threading.Barrier(8)
    taken: list[list[str]] = [[] for _ in range(8)]

    def claimer(mine: list[str]) -> None:
        barrier.wait(10)
        while claimed := contract_store.outbox.claim(time.time(), LEASE, 7):
            mine.extend(ids(claimed))

    threads = [threading.Thread(target=claimer, args=(mine,)) for mine in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    every = [event_id for mine in taken for event_id in mine]
    assert sorted(every) == sorted(events)  # each once: no event taken by two claims
    assert contract_store.outbox.claim(time.time(), LEASE, 10) == []


# -- events are written with their charge ----------------------------------------------------------

BUDGET = Notify(token="t", spend_tracked=False, max_budget_units=1_000, thresholds=(Decimal("0.5"),))


def test_a_calls_events_are_in_the_outbox_when_record_call_returns(contract_store):
    notify = Notify(token="key-hash", max_budget_units=5 * 10**12)
    now = time.time()
    record = charge(contract_store, "krrish12", 2_500_000, notify, now)
    [event] = contract_store.outbox.claim(now, LEASE, 10)
    expected = spend_tracked(notify, "krrish12", 2_500_000, now, call_event_id(record.request_id, now))
    assert (event.event_id, event.event, event.customer_id, event.body) == (
        expected.event_id,
        "spend_tracked",
        "krrish12",
        expected.body,
    )


def test_budget_events_fire_once_per_customer_event_threshold_and_window(contract_store):
    now = time.time()
    first_end = now + 100
    first = Notify(**{**BUDGET.__dict__, "window_end": first_end})
    charge(contract_store, "c", 600, first, now, window_end=first_end)  # half the budget
    charge(contract_store, "c", 600, first, now + 1, window_end=first_end)  # over it: half again, and all
    charge(contract_store, "c", 10, first, now + 2, window_end=first_end)  # nothing new
    charge(contract_store, "other", 1_200, first, now + 2, window_end=first_end)  # another customer
    second_end = first_end + 100
    second = Notify(**{**BUDGET.__dict__, "window_end": second_end})
    charge(contract_store, "c", 600, second, first_end + 1, window_end=second_end)  # a new window
    assert written(contract_store) == [
        ("c", "threshold_crossed"),
        ("c", "budget_crossed"),
        ("other", "threshold_crossed"),
        ("other", "budget_crossed"),
        ("c", "threshold_crossed"),
    ]


def test_a_call_that_is_not_recorded_leaves_no_event_and_no_mark(contract_store, engine):
    now = time.time()
    notify = Notify(**{**BUDGET.__dict__, "spend_tracked": True})
    charge(contract_store, "c", 100, notify, now)
    [earlier] = contract_store.outbox.list(None, 10)
    # A call that would cross the budget fails in its transaction after its marks are written:
    # its last event has the id of an event already in the outbox.
    record = CallRecord(str(uuid.uuid4()), "c", "m", "mock/m", "d", Usage(), 2_000, now + 1, now + 1)
    events, on_spend = announcements(notify, "c", 2_000, record.request_id, now + 1)

    def crossing_then_failing(spend: int):
        return [*on_spend(spend), replace(events[0], event_id=earlier.event_id)]

    with pytest.raises(DUPLICATE[engine]):
        contract_store.ledger.record_call(record, Settlement(events=events, on_spend=crossing_then_failing))
    assert written(contract_store) == [("c", "spend_tracked")]
    charge(contract_store, "c", 2_000, notify, now + 2)  # the crossing the failed call never marked
    assert written(contract_store) == [
        ("c", "spend_tracked"),
        ("c", "spend_tracked"),
        ("c", "threshold_crossed"),
        ("c", "budget_crossed"),
    ]


def test_a_failed_call_writes_no_event(contract_store):
    charge(contract_store, "c", 0, Notify(**{**BUDGET.__dict__, "spend_tracked": True}), time.time(), status="failure")
    assert contract_store.outbox.list(None, 10) == []
    assert sql_rows(contract_store, "SELECT COUNT(*) FROM alert_marks") == [(0,)]


# -- SQLite --------------------------------------------------------------------------------------


def test_finding_nothing_due_takes_no_write_lock(sqlite_store):
    write_events(sqlite_store, 3, time.time() + 3600)  # due in an hour
    look = lambda: sqlite_store.outbox.claim(time.time(), LEASE, 100)  # noqa: E731
    assert answer_while_the_writer_turn_is_held(sqlite_store, look) == []


def test_a_claim_reads_the_due_index_instead_of_sorting_the_backlog(sqlite_store):
    write_events(sqlite_store, 3, time.time())
    statements = []
    connection = sqlite_store.engine._connection()  # the one this thread's claim runs on
    connection.set_trace_callback(statements.append)
    try:
        sqlite_store.outbox.claim(time.time(), LEASE, 100)
    finally:
        connection.set_trace_callback(None)
    [claim] = [statement for statement in statements if statement.startswith("UPDATE webhook_events")]
    steps = " / ".join(row[-1] for row in connection.execute(f"EXPLAIN QUERY PLAN {claim}").fetchall())
    assert "USING INDEX webhook_events_due" in steps and "TEMP B-TREE" not in steps


# The spend log as migration 0005 left it: announced rows after the cursor are events to post.
_OLD_LOG = (
    "INSERT INTO spend_logs (seq, request_id, customer_id, model_group, provider_model, deployment_id, "
    "prompt_tokens, completion_tokens, cached_tokens, cache_creation_tokens, reasoning_tokens, cost_units, priced, "
    "estimated, status, latency_ms, started_at, created_at, announced, key_hash, max_budget_units, soft_budget_units) "
    "VALUES (?, ?, ?, 'm', 'mock/m', 'd', 1, 1, 0, 0, 0, ?, 1, 0, 'success', 1, ?, ?, ?, ?, ?, ?)"
)


def database_at_0005(path, rows: list[tuple], position: int, claims: list[tuple], outbox: list[tuple]) -> None:
    """A database as 0005 left it: spend-log `rows` (seq, request id, customer, cost, ended, announced,
    key hash, max budget, soft budget), the cursor at `position`, `claims` (after, through, done) and
    `outbox` rows (event id, seq, status, attempts, payload, created_at)."""
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.execute(migrations.TABLE)
        for migration in migrations.load("sqlite"):
            if migration.version <= 5:
                migration.apply(connection)
                connection.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, 'then')", (migration.version, migration.name)
                )
        stamp = iso_timestamp(time.time())
        for seq, request_id, customer, cost, ended, announced, key_hash, max_units, soft_units in rows:
            if customer is not None:
                connection.execute(
                    "INSERT INTO customers (user_id, created_at, updated_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (customer, stamp, stamp),
                )
                connection.execute(
                    "INSERT INTO spend_accounts (user_id, scope, spend_units) VALUES (?, '', ?) "
                    "ON CONFLICT DO UPDATE SET spend_units = spend_units + excluded.spend_units",
                    (customer, cost),
                )
            created = iso_timestamp(ended)
            connection.execute(
                _OLD_LOG,
                (seq, request_id, customer, cost, created, created, announced, key_hash, max_units, soft_units),
            )
        connection.execute("UPDATE webhook_cursor SET position = ?", (position,))
        for after, through, done in claims:
            connection.execute(
                "INSERT INTO webhook_claims (after_seq, through_seq, owner, lease_until, done) "
                "VALUES (?, ?, 'w', ?, ?)",
                (after, through, time.time() + LEASE, done),
            )
        for event_id, seq, status, attempts, payload, created_at in outbox:
            connection.execute(
                "INSERT INTO webhook_events (event_id, customer_id, event, payload, status, attempts, next_attempt_at, "
                "retry_until, created_at, seq) VALUES (?, 'c', 'spend_tracked', ?, ?, ?, ?, ?, ?, ?)",
                (event_id, payload, status, attempts, created_at, created_at + RETRY_WINDOW_SECONDS, created_at, seq),
            )


def test_the_migration_moves_the_spend_logs_unposted_events_into_the_outbox_as_they_would_have_been_posted(
    database_url, stores
):
    url = database_url("sqlite", "old.db")
    path = url[len("sqlite:///") :]
    base = time.time() - 3600
    five_usd = 5 * 10**12
    rows = [
        # seq, request id, customer, cost, ended, announced, key hash, max budget, soft budget
        (1, "settled-by-cursor", "c", 10, base + 1, 1, "kh", five_usd, None),
        (2, "settled-by-cursor-2", "c", 11, base + 2, 1, "kh", five_usd, None),
        (3, "settled-in-done-run", "c", 12, base + 3, 1, "kh", five_usd, None),
        (4, "in-a-run-still-out", "c", 13, base + 4, 1, None, None, None),
        (5, "failed-post-in-outbox", "c", 14, base + 5, 1, "kh", five_usd, None),
        (6, "announces-nothing", "c", 15, base + 6, 0, None, None, None),
        (7, "after-the-cursor", "d", 16, base + 7, 1, "kh2", five_usd, five_usd // 2),
        (8, "after-the-cursor-2", "c", 17, base + 8, 1, "kh", None, None),
    ]
    outbox = [
        ("evt_failed_first_post", 5, "pending", 1, '{"retried": true}', base + 5),
        ("evt_budget_event", None, "pending", 0, '{"budget": true}', base + 4.5),
    ]
    database_at_0005(path, rows, position=2, claims=[(2, 3, 1), (3, 4, 0)], outbox=outbox)

    store = open_store(url)
    stores.append(store)
    assert store.engine.migrate()[0] == "0006_exact_money_plain_outbox"

    expected = {}
    for _, request_id, customer, cost, ended_at, _, key_hash, max_units, soft_units in (rows[3], rows[6], rows[7]):
        ended = epoch(iso_timestamp(ended_at))  # the spend log's time, to the microsecond
        notify = Notify(token=key_hash, max_budget_units=max_units, soft_budget_units=soft_units)
        event = spend_tracked(notify, customer, cost, ended, call_event_id(request_id, ended))
        expected[event.event_id] = event.body
    events = {event.event_id: event for event in store.outbox.list(None, 100)}
    assert set(events) == {*expected, "evt_failed_first_post", "evt_budget_event"}
    assert {event_id: events[event_id].body for event_id in expected} == expected
    assert {(events[event_id].status, events[event_id].attempts) for event_id in expected} == {("pending", 0)}
    assert (events["evt_failed_first_post"].status, events["evt_failed_first_post"].attempts) == ("pending", 1)
    # In the order they fell due: the spend log's order, the failed post's retry and the budget event among them.
    claimed = store.outbox.claim(time.time(), LEASE, 100)
    assert [event.customer_id for event in claimed if event.event_id in expected] == ["c", "d", "c"]
    assert [event.created_at for event in claimed] == sorted(event.created_at for event in claimed)

    tables = {row[0] for row in sql_rows(store, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not tables & {"webhook_cursor", "webhook_claims"}
    columns = {row[1] for row in sql_rows(store, "PRAGMA table_info(spend_logs)")}
    assert not columns & {"announced", "key_hash", "max_budget_units", "soft_budget_units"}

    # Money is decimal text now, old values included, and exact past int64.
    assert sql_rows(store, "SELECT DISTINCT typeof(spend_units) FROM spend_accounts") == [("text",)]
    assert store.admin.get_customer("c").spend_units == 10 + 11 + 12 + 13 + 14 + 15 + 17
    store.ledger.record_call(CallRecord("new-call", "c", "m", "mock/m", "d", Usage(), 10**20, time.time(), time.time()))
    assert store.admin.get_customer("c").spend_units == 10**20 + 92
    assert [row.cost_units for row in store.ledger.spend_logs("c", limit=2)] == [10**20, 17]
    updated = store.admin.update_customer("d", {}, {"max_budget_units": 10_000_000 * 10**12}, time.time())
    assert updated.budget.max_budget_units == 10_000_000 * 10**12


def test_empty_lists_of_events_change_nothing(contract_store):
    contract_store.outbox.release([])
    contract_store.outbox.delivered([], time.time())
    assert contract_store.outbox.requeue([], time.time(), RETRY_WINDOW_SECONDS) == 0
