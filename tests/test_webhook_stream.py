"""spend_tracked events read from the spend log: a call's event is its own spend-log row, and the
dispatchers post those rows in order from a leased cursor; an event whose post fails moves to
the outbox and is retried from there. Real SQLite files, a local sink for delivery.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid

import pytest

from providers.base import Usage
from spend import migrations, sqlite_outbox
from spend.sqlite import SQLiteStore
from spend.store import CallRecord, Settlement, open_store
from tests.helpers import answer_while_the_writer_turn_is_held
from tests.webhook_sink import WebhookSink
from webhooks.dispatcher import Dispatcher
from webhooks.events import Notify, call_event_id, spend_tracked

LEASE = 45.0
NOTIFY = Notify(token="key-hash", max_budget_units=5 * 10**12, soft_budget_units=None)


@pytest.fixture
def store(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'spend.db'}")
    store.migrate()
    yield store
    store.close()


def charge(store, customer="c1", cost=1_000, notify=NOTIFY, ended_at=None, status="success", priced=True) -> str:
    """One call settled as `calls.settle` settles it; returns its request id."""
    ended_at = time.time() if ended_at is None else ended_at
    request_id = str(uuid.uuid4())
    record = CallRecord(
        request_id, customer, "m", "mock/m", "d", Usage(), cost, ended_at, ended_at, status=status, priced=priced
    )
    store.record_call(record, Settlement(notify=notify))
    return request_id


def outbox_rows(store) -> list[tuple]:
    return store._connection().execute("SELECT event_id, status, attempts, seq FROM webhook_events").fetchall()


def position(store) -> int:
    return store._connection().execute("SELECT position FROM webhook_cursor").fetchone()[0]


def test_a_calls_event_is_its_spend_log_row_rendered_as_announced(store):
    ended = time.time() - 1
    request_id = charge(store, "krrish12", cost=2_500_000, ended_at=ended)
    assert outbox_rows(store) == []  # the call wrote no outbox row
    claim = store.claim_stream(time.time(), LEASE, 100)
    [event] = claim.events
    stored_end = event.created_at
    assert abs(stored_end - ended) < 1e-5
    expected = spend_tracked(NOTIFY, "krrish12", 2_500_000, stored_end, call_event_id(request_id, stored_end))
    assert (event.event_id, event.body) == (expected.event_id, expected.body)
    body = json.loads(event.body)
    assert (body["token"], body["max_budget"], body["customer_id"]) == ("key-hash", 5.0, "krrish12")
    assert body["event_id"] == event.event_id and event.event_id.startswith("evt_")


def test_only_charged_priced_announced_calls_have_events(store):
    charge(store, "off", notify=None)
    charge(store, "budget-only", notify=Notify(token="t", spend_tracked=False))
    charge(store, "failed", status="failure")
    charge(store, "unpriced", priced=False)
    charge(store, None)
    announced = charge(store, "yes")
    claim = store.claim_stream(time.time(), LEASE, 100)
    assert [event.customer_id for event in claim.events] == ["yes"]
    assert claim.events[0].event_id == call_event_id(announced, claim.events[0].created_at)


def test_a_claimed_run_is_posted_by_one_dispatcher_until_its_lease_ends(store):
    for n in range(3):
        charge(store, f"c{n}")
    now = time.time()
    first = store.claim_stream(now, LEASE, 100)
    assert len(first.events) == 3
    assert store.claim_stream(now, LEASE, 100) is None  # claimed, and nothing after it
    later = now + LEASE + 1
    second = store.claim_stream(later, LEASE, 100)
    assert [event.event_id for event in second.events] == [event.event_id for event in first.events]
    # The first dispatcher's lease ran out and the run was taken again: what it settles changes nothing.
    assert store.stream_settled(first, 3, [(first.events[0], "HTTP 500", later)], later) == []
    assert position(store) == first.start and outbox_rows(store) == []
    store.stream_settled(second, 3, [], later)
    assert position(store) == second.end
    assert store.claim_stream(later, LEASE, 100) is None  # nothing after the cursor


def test_dispatchers_take_consecutive_runs_and_the_position_moves_over_the_settled_front(store):
    for n in range(6):
        charge(store, f"c{n}")
    now = time.time()
    first, second = store.claim_stream(now, LEASE, 2), store.claim_stream(now, LEASE, 2)
    third = store.claim_stream(now, LEASE, 2)
    assert [len(claim.events) for claim in (first, second, third)] == [2, 2, 2]
    assert (first.end, second.start, second.end, third.start) == (2, 2, 4, 4)
    store.stream_settled(second, 2, [], now)
    assert position(store) == 0  # the first run is still out
    assert [event.status for event in store.list_events(None, 10)].count("delivered") == 2
    store.stream_settled(first, 2, [], now)
    assert position(store) == 4
    store.stream_settled(third, 2, [], now)
    assert position(store) == 6
    assert store._connection().execute("SELECT COUNT(*) FROM webhook_claims").fetchone() == (0,)


def test_settling_part_of_a_claim_moves_the_cursor_past_that_part_only(store):
    for n in range(4):
        charge(store, f"c{n}")
    now = time.time()
    claim = store.claim_stream(now, LEASE, 100)
    failed = claim.events[1]
    store.stream_settled(claim, 2, [(failed, "HTTP 500", now + 1)], now)
    assert outbox_rows(store) == [(failed.event_id, "pending", 1, failed.seq)]
    assert position(store) == 2
    rest = store.claim_stream(now, LEASE, 100)  # given back: taken at once, by any dispatcher
    assert [event.event_id for event in rest.events] == [event.event_id for event in claim.events[2:]]
    store.stream_settled(rest, 2, [], now)
    assert position(store) == 4


def test_a_failed_event_past_its_retry_window_goes_to_the_outbox_dead(store):
    charge(store, "late", ended_at=time.time() - 10)
    claim = store.claim_stream(time.time(), LEASE, 100)
    too_late = claim.events[0].created_at + sqlite_outbox.RETRY_WINDOW_SECONDS + 1
    dead = store.stream_settled(claim, 1, [(claim.events[0], "HTTP 500", too_late)], time.time())
    assert [event.event_id for event in dead] == [claim.events[0].event_id]
    assert [row[1] for row in outbox_rows(store)] == ["dead"]


def test_listings_show_every_event_once_with_where_it_stands(store):
    for n in range(4):
        charge(store, f"c{n}")
    now = time.time()
    claim = store.claim_stream(now, LEASE, 2)
    delivered, failed = claim.events
    store.stream_settled(claim, 2, [(failed, "HTTP 500", now + 60)], now)
    listed = store.list_events(None, 100)
    assert len({event.event_id for event in listed}) == 4
    assert {event.customer_id: (event.status, event.attempts) for event in listed} == {
        "c0": ("delivered", 1),
        "c1": ("pending", 1),  # from the outbox
        "c2": ("pending", 0),  # after the cursor
        "c3": ("pending", 0),
    }
    assert sorted(event.customer_id for event in store.list_events("pending", 100)) == ["c1", "c2", "c3"]
    assert [event.event_id for event in store.list_events("delivered", 100)] == [delivered.event_id]
    assert [event.customer_id for event in store.list_events(None, 2)] == ["c3", "c2"]  # newest first
    assert store.list_events("dead", 100) == []


def test_rows_that_announce_nothing_are_passed_without_a_lease(store, monkeypatch):
    monkeypatch.setattr(sqlite_outbox, "SCAN_ROWS", 5)
    for n in range(7):
        charge(store, f"quiet{n}", notify=None)
    charge(store, "loud")
    now = time.time()
    first = store.claim_stream(now, LEASE, 100)
    assert first.events == [] and first.more and position(store) == first.end == 5
    second = store.claim_stream(now, LEASE, 100)  # the first holds no lease
    assert [event.customer_id for event in second.events] == ["loud"] and not second.more


def test_a_call_not_yet_due_holds_back_the_rows_after_it(store):
    now = time.time()
    charge(store, "old", ended_at=now - 10)
    charge(store, "new", ended_at=now)
    charge(store, "ended-earlier-committed-later", ended_at=now - 10)
    claim = store.claim_stream(now, LEASE, 100, due_by=now - 5)
    assert [event.customer_id for event in claim.events] == ["old"]
    store.stream_settled(claim, 1, [], now)
    assert store.claim_stream(now, LEASE, 100, due_by=now - 5) is None
    later = store.claim_stream(now, LEASE, 100)
    assert [event.customer_id for event in later.events] == ["new", "ended-earlier-committed-later"]


def test_finding_nothing_on_the_stream_takes_no_write_lock(store):
    charge(store, "future", ended_at=time.time() + 3600)
    assert answer_while_the_writer_turn_is_held(store, lambda: store.claim_stream(time.time(), LEASE, 100)) is None


def test_a_calls_spend_tracked_event_goes_before_the_budget_events_it_raised(store):
    budget = Notify(token="t", max_budget_units=1_000, thresholds=())
    charge(store, "spender", cost=1_500, notify=budget)
    with WebhookSink() as sink:
        dispatcher = Dispatcher(store, sink.url)
        assert dispatcher.deliver_due() == 2
        assert [event["event"] for event in sink.accepted] == ["spend_tracked", "budget_crossed"]
    assert [row[1] for row in outbox_rows(store)] == ["delivered"]  # the budget event; the other never went in
    assert position(store) == 1


def test_a_failed_post_is_retried_from_the_outbox_with_the_same_id(store):
    for n in range(3):
        charge(store, f"c{n}")
    with WebhookSink(fail_first=1) as sink:
        dispatcher = Dispatcher(store, sink.url, depth=1)
        assert dispatcher.deliver_due() == 0  # the first post failed: the round ends
        [(event_id, status, attempts, seq)] = outbox_rows(store)
        assert (status, attempts, seq) == ("pending", 1, 1) and position(store) == 1
        dispatcher.clock = lambda: time.time() + 60  # its retry is due
        assert dispatcher.deliver_due() == 3
        ids = [event["event_id"] for event in sink.accepted]
    assert ids[-1] == event_id and len(set(ids)) == 3  # its retry fell due after the others
    assert outbox_rows(store) == [(event_id, "delivered", 2, 1)]
    assert [event.status for event in store.list_events(None, 10)] == ["delivered"] * 3


def test_the_migration_keeps_the_spend_log_in_order_and_starts_the_cursor_after_it(tmp_path):
    path = tmp_path / "old.db"
    old = [migration for migration in migrations.load("sqlite") if migration.version < 5]
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)")
        for migration in old:
            for statement in migration.statements:
                connection.execute(statement)
            connection.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, 'then')", (migration.version, migration.name)
            )
        for n in range(3):
            connection.execute(
                "INSERT INTO spend_logs (request_id, customer_id, model_group, provider_model, deployment_id, "
                "prompt_tokens, completion_tokens, cached_tokens, cache_creation_tokens, reasoning_tokens, "
                "cost_units, priced, estimated, status, latency_ms, started_at, created_at) "
                "VALUES (?, 'c', 'm', 'm', 'd', 1, 1, 0, 0, 0, ?, 1, 0, 'success', 1, 't', ?)",
                (f"old-{n}", 10 + n, f"2026-01-0{n + 1}T00:00:00.000000Z"),
            )
    store = SQLiteStore(str(path))
    store.migrate()
    try:
        rows = store._connection().execute("SELECT seq, request_id, announced FROM spend_logs ORDER BY seq").fetchall()
        assert rows == [(1, "old-0", 0), (2, "old-1", 0), (3, "old-2", 0)]
        assert position(store) == 3 and store.claim_stream(time.time(), LEASE, 100) is None
        charge(store, "after")
        [event] = store.claim_stream(time.time(), LEASE, 100).events
        assert (event.customer_id, event.seq) == ("after", 4)
        assert [row.request_id for row in store.spend_logs(customer_id="c")] == ["old-2", "old-1", "old-0"]
    finally:
        store.close()


def test_dispatchers_delivering_at_once_post_every_event_once(store):
    for n in range(500):
        charge(store, f"c{n % 20}")
    with WebhookSink() as one, WebhookSink() as other:
        dispatchers = [Dispatcher(store, one.url, poll_seconds=0.1), Dispatcher(store, other.url, poll_seconds=0.1)]
        for dispatcher in dispatchers:
            dispatcher.start()
        try:
            deadline = time.monotonic() + 30
            while len(one.accepted) + len(other.accepted) < 500 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            for dispatcher in dispatchers:
                dispatcher.stop()
        ids = [event["event_id"] for event in one.accepted + other.accepted]
    assert len(ids) == len(set(ids)) == 500
    assert position(store) == 500
    assert store._connection().execute("SELECT COUNT(*) FROM webhook_claims").fetchone() == (0,)
