"""Who delivers the outbox: dispatchers on one SQLite store, each posting to its own local sink.

A worker that is serving calls leaves new events to a quiet one; events nobody takes still go
out; a dispatcher with nothing due stays out of the writers' way; delivered events are deleted
after their retention, and no others.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from spend.sqlite_outbox import NEXT_DUE, add_events

from spend.store import open_store
from tests.helpers import answer_while_the_writer_turn_is_held
from tests.webhook_sink import PipelineReceiver, WebhookSink
from webhooks import dispatcher as dispatch
from webhooks.dispatcher import Dispatcher
from webhooks.events import Notify, spend_tracked


@pytest.fixture
def store(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'spend.db'}")
    store.engine.migrate()
    yield store
    store.engine.close()


@pytest.fixture
def sinks():
    with WebhookSink() as busy, WebhookSink() as quiet:
        yield busy, quiet


def write_events(store, count: int, now: float) -> set[str]:
    """`count` spend_tracked events in the outbox, as calls write them; returns their ids."""
    events = [spend_tracked(Notify(token="t"), f"c{n}", 1_000, now) for n in range(count)]
    with store._write() as connection:
        add_events(connection, events, now)
    return {event.event_id for event in events}


def received(sink) -> set[str]:
    return {event["event_id"] for event in sink.accepted}


@contextmanager
def serving_calls(dispatcher: Dispatcher) -> Iterator[None]:
    """Calls keep coming to this worker the whole time: it never goes quiet."""
    stop = threading.Event()

    def calls():
        while not stop.wait(0.05):
            dispatcher.wake()

    dispatcher.wake()
    feeder = threading.Thread(target=calls)
    feeder.start()
    try:
        yield
    finally:
        stop.set()
        feeder.join()


def test_a_serving_worker_leaves_new_events_to_a_quiet_one(store, sinks):
    busy_sink, quiet_sink = sinks
    busy, quiet = Dispatcher(store, busy_sink.url), Dispatcher(store, quiet_sink.url, poll_seconds=0.1)
    ids = write_events(store, 30, time.time())
    with serving_calls(busy):
        assert busy.serving() and not quiet.serving()
        assert busy.deliver_due(dispatch.HANDOFF_SECONDS) == 0
        for worker in (busy, quiet):
            worker.start()
        try:
            quiet_sink.wait_for(30, timeout=10)
            time.sleep(0.3)
        finally:
            for worker in (busy, quiet):
                worker.stop()
    assert received(quiet_sink) == ids and len(quiet_sink.accepted) == 30
    assert busy_sink.accepted == []


def test_events_nobody_takes_are_delivered_by_a_serving_worker_after_the_handoff(store, sinks, monkeypatch):
    busy_sink, _ = sinks
    monkeypatch.setattr(dispatch, "HANDOFF_SECONDS", 0.5)
    busy = Dispatcher(store, busy_sink.url)
    ids = write_events(store, 10, time.time())
    with serving_calls(busy):
        assert busy.deliver_due(dispatch.HANDOFF_SECONDS) == 0
        busy.start()
        try:
            busy_sink.wait_for(10, timeout=10)
            assert busy.serving()
        finally:
            busy.stop()
    assert received(busy_sink) == ids


def test_a_quiet_worker_delivers_at_once(store, sinks):
    _, quiet_sink = sinks
    quiet = Dispatcher(store, quiet_sink.url)
    ids = write_events(store, 5, time.time())
    assert quiet.deliver_due() == 5
    assert received(quiet_sink) == ids
    assert quiet.deliver_due() == 0
    assert store.outbox.list("pending", 10) == []


def test_a_quiet_worker_looks_again_soon_while_events_flow_and_rarely_when_they_stop(store, sinks, monkeypatch):
    # The other workers' calls write events without waking this thread: it finds them by looking.
    _, quiet_sink = sinks
    quiet = Dispatcher(store, quiet_sink.url, poll_seconds=600.0)
    looks = []  # how many events each look found
    claim = store.claim_events

    def look(*args, **kwargs):
        found = claim(*args, **kwargs)
        looks.append(len(found))
        return found

    monkeypatch.setattr(store, "claim_events", look)
    first = write_events(store, 3, time.time())
    quiet.start()
    try:
        quiet_sink.wait_for(3, timeout=10)
        second = write_events(store, 3, time.time())  # long before the 600 s poll
        quiet_sink.wait_for(6, timeout=10)
        deadline = time.monotonic() + 10
        while looks[-1] != 0 and time.monotonic() < deadline:  # the look after the flow finds nothing ...
            time.sleep(0.01)
        idle = len(looks)
        time.sleep(dispatch.FLOW_SECONDS * 5)  # ... and then it waits for the poll
        assert looks[-1] == 0 and len(looks) == idle
    finally:
        quiet.stop()
    assert received(quiet_sink) == first | second


def test_finding_nothing_due_takes_no_write_lock(store):
    write_events(store, 3, time.time() + 3600)  # due in an hour
    assert answer_while_the_writer_turn_is_held(store, lambda: store.outbox.claim(time.time(), 45.0, 100)) == []


def test_a_claim_leases_the_oldest_due_events_once(store):
    now = time.time()
    first = write_events(store, 3, now - 2)
    second = write_events(store, 3, now - 1)
    claimed = store.outbox.claim(now, 45.0, 4)
    assert [event.created_at for event in claimed] == sorted(event.created_at for event in claimed)
    assert {event.event_id for event in claimed[:3]} == first and claimed[3].event_id in second
    rest = store.outbox.claim(now, 45.0, 10)
    assert {event.event_id for event in rest} == second - {claimed[3].event_id}
    assert store.outbox.claim(now, 45.0, 10) == []  # all leased
    store.outbox.release([event.event_id for event in rest])
    assert {event.event_id for event in store.outbox.claim(now, 45.0, 10)} == {event.event_id for event in rest}


def test_a_claim_takes_events_in_the_order_they_fall_due(store):
    now = time.time()
    [retried] = write_events(store, 1, now - 10)
    [claimed] = store.outbox.claim(now, 45.0, 1)
    store.event_failed(retried, "HTTP 500", now - 1, now - 5)  # its retry fell due after the next two
    fresh = write_events(store, 2, now - 3)
    assert claimed.event_id == retried
    assert [event.event_id for event in store.outbox.claim(now, 45.0, 10)] == [*sorted(fresh), retried]


def test_a_claim_reads_the_due_index_instead_of_sorting_the_backlog(store):
    plan = store._connection().execute(f"EXPLAIN QUERY PLAN {NEXT_DUE}", (1.0, 1.0, 100)).fetchall()
    steps = " / ".join(row[-1] for row in plan)
    assert "USING INDEX webhook_events_due" in steps and "TEMP B-TREE" not in steps


def test_delivered_events_past_their_retention_are_deleted_and_no_others(store, sinks):
    sink, _ = sinks
    day = 86_400.0
    now = time.time()
    old_delivered = write_events(store, 3, now - 9 * day)
    store.outbox.delivered(list(old_delivered), now - 8 * day)
    recent_delivered = write_events(store, 2, now - 9 * day)
    store.outbox.delivered(list(recent_delivered), now - 6 * day)  # delivered late, within the retention
    old_dead = write_events(store, 1, now - 30 * day)
    [dead] = old_dead
    assert store.event_failed(dead, "HTTP 500", now - 29 * day, now - 29 * day) == "dead"
    old_pending = write_events(store, 2, now - 20 * day)
    dispatcher = Dispatcher(store, sink.url, retention_seconds=7 * day)
    assert dispatcher.purge() == 3
    kept = {event.event_id: event.status for event in store.outbox.list(None, 100)}
    assert kept == {
        **{event_id: "delivered" for event_id in recent_delivered},
        dead: "dead",
        **{event_id: "pending" for event_id in old_pending},
    }
    assert dispatcher.purge() == 0


def test_the_delivery_thread_purges_in_batches_as_it_starts(store, sinks, monkeypatch):
    sink, _ = sinks
    monkeypatch.setattr(dispatch, "PURGE_BATCH", 4)
    now = time.time()
    delivered = write_events(store, 10, now - 100)
    store.outbox.delivered(list(delivered), now - 50)
    dispatcher = Dispatcher(store, sink.url, retention_seconds=10)
    dispatcher.start()
    try:
        deadline = time.monotonic() + 10
        while store.outbox.list("delivered", 100) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        dispatcher.stop()
    assert store.outbox.list(None, 100) == []


def test_events_are_posted_pipelined_on_one_kept_open_connection(store):
    ids = write_events(store, 40, time.time())
    with PipelineReceiver() as receiver:
        dispatcher = Dispatcher(store, receiver.url, depth=16)
        assert dispatcher.deliver_due() == 40
        assert [event["event_id"] for event in receiver.accepted] == sorted(ids)  # claim order: same created_at
        assert receiver.connections == 1
        assert max(receiver.per_read) > 1  # several posts arrived before the first was answered
        assert dispatcher.depth == 16
    assert store.outbox.list("pending", 100) == []


def test_one_at_a_time_sends_each_post_after_the_last_answer(store):
    ids = write_events(store, 10, time.time())
    with PipelineReceiver() as receiver:
        assert Dispatcher(store, receiver.url, depth=1).deliver_due() == 10
        assert {event["event_id"] for event in receiver.accepted} == ids
        assert receiver.per_read == [1] * 10 and receiver.connections == 1


def test_a_failed_post_in_a_window_is_retried_and_the_others_are_delivered(store):
    ids = write_events(store, 10, time.time())
    with PipelineReceiver(statuses={2: 500}) as receiver:
        dispatcher = Dispatcher(store, receiver.url, depth=16)
        assert dispatcher.deliver_due() == 9
        failed = {body["event_id"] for body in map(json.loads, (b for b, status in receiver.answered if status == 500))}
        [pending] = store.outbox.list("pending", 100)
        assert {pending.event_id} == failed and pending.attempts == 1 and pending.last_error == "HTTP 500"
        assert {event["event_id"] for event in receiver.accepted} == ids - failed


@pytest.mark.parametrize(("how", "depth_after"), [("close-after-3", 16), ("http/1.0", 1)])
def test_posts_left_unanswered_when_the_receiver_closes_go_again_on_a_new_connection(store, how, depth_after):
    ids = write_events(store, 20, time.time())
    with PipelineReceiver(how) as receiver:
        dispatcher = Dispatcher(store, receiver.url, depth=16)
        delivered = 0
        for _ in range(20):
            delivered += dispatcher.deliver_due()
        assert delivered == 20
        assert sorted(event["event_id"] for event in receiver.accepted) == sorted(ids)  # each once
        assert receiver.connections > 1 and dispatcher.depth == depth_after
    assert store.outbox.list("pending", 100) == []


def test_a_receiver_that_drops_pipelined_posts_gets_them_one_at_a_time(store, monkeypatch, caplog):
    monkeypatch.setattr(dispatch, "READ_TIMEOUT", 0.5)
    ids = write_events(store, 12, time.time())
    with PipelineReceiver("one-per-read") as receiver:
        dispatcher = Dispatcher(store, receiver.url, depth=16)
        assert dispatcher.deliver_due() == 12
        assert sorted(event["event_id"] for event in receiver.accepted) == sorted(ids)
        assert dispatcher.depth == 1
    assert "posting one at a time from now on" in caplog.text
    assert store.outbox.list("pending", 100) == [] and store.outbox.list("dead", 100) == []


def test_a_slow_receiver_gets_what_the_claims_lease_cannot_cover_from_a_later_claim(store, monkeypatch):
    monkeypatch.setattr(dispatch, "LEASE_SECONDS", 1.0)
    ids = write_events(store, 20, time.time())
    with PipelineReceiver(delay=0.1) as receiver:
        dispatcher = Dispatcher(store, receiver.url, depth=2)
        first = dispatcher.deliver_due()
        assert 2 <= first <= 8  # windows of 2 at ~0.2 s each, none started past 0.75 s with the slowest
        left = store.outbox.claim(time.time(), 1.0, 100)  # given back, not left leased
        assert len(left) == 20 - first
        store.outbox.release([event.event_id for event in left])
        while dispatcher.deliver_due():
            pass
        assert sorted(event["event_id"] for event in receiver.accepted) == sorted(ids)  # each once
