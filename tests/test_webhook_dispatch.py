"""Who delivers the outbox, and how: dispatchers on one store, each posting to a local sink.

A worker that is serving calls leaves new events to a quiet one; events nobody takes still go
out; a failed post is retried later while the rest of its round waits; a slow receiver's rest
goes back for a later claim; delivered events are deleted after their retention, and no others.
What touches the outbox runs on every engine (`contract_store`); the timing of who delivers runs
on the suite's engine.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest

from providers.base import Usage
from spend.engines import open_store
from spend.outbox import add_events
from spend.store import CallRecord, Settlement
from tests.webhook_sink import WebhookSink
from webhooks import dispatcher as dispatch
from webhooks.dispatcher import Dispatcher
from webhooks.events import Notify, announcements, spend_tracked

DAY = 86_400.0


@pytest.fixture
def store(database_url, stores):
    """A migrated store on the suite's engine."""
    store = open_store(database_url())
    stores.append(store)
    store.engine.migrate()
    return store


@pytest.fixture
def sinks():
    with WebhookSink() as busy, WebhookSink() as quiet:
        yield busy, quiet


def write_events(store, count: int, now: float) -> list[str]:
    """`count` spend_tracked events in the outbox, as calls write them; their ids in the order written."""
    events = [spend_tracked(Notify(token="t"), f"c{n}", 1_000, now) for n in range(count)]
    store.engine.write(lambda tx: add_events(tx, events, now))
    return [event.event_id for event in events]


def received(sink) -> list[str]:
    return [event["event_id"] for event in sink.accepted]


def statuses(store) -> dict[str, tuple[str, int]]:
    return {event.event_id: (event.status, event.attempts) for event in store.outbox.list(None, 1000)}


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


# -- who delivers ----------------------------------------------------------------------------------


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
    assert sorted(received(quiet_sink)) == sorted(ids) and len(quiet_sink.accepted) == 30
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
    assert sorted(received(busy_sink)) == sorted(ids)


def test_a_quiet_worker_looks_again_soon_while_events_flow_and_rarely_when_they_stop(store, sinks, monkeypatch):
    # The other workers' calls write events without waking this thread: it finds them by looking.
    _, quiet_sink = sinks
    quiet = Dispatcher(store, quiet_sink.url, poll_seconds=600.0)
    looks = []  # how many events each look found
    claim = store.outbox.claim

    def look(*args, **kwargs):
        found = claim(*args, **kwargs)
        looks.append(len(found))
        return found

    monkeypatch.setattr(store.outbox, "claim", look)  # counts the real claims
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
    assert received(quiet_sink) == first + second


# -- what a round does with the outbox (every engine) -----------------------------------------------


def test_a_quiet_worker_delivers_at_once_in_the_order_written(contract_store, sinks):
    _, quiet_sink = sinks
    quiet = Dispatcher(contract_store, quiet_sink.url)
    ids = write_events(contract_store, 5, time.time())
    assert quiet.deliver_due() == 5
    assert received(quiet_sink) == ids
    assert quiet.deliver_due() == 0
    assert statuses(contract_store) == {event_id: ("delivered", 1) for event_id in ids}


def test_a_calls_spend_tracked_event_goes_before_the_budget_events_it_raised(contract_store, sinks):
    sink, _ = sinks
    notify = Notify(token="t", max_budget_units=1_000, thresholds=(Decimal("0.5"),))
    now = time.time()
    record = CallRecord("call-1", "spender", "m", "mock/m", "d", Usage(), 1_500, now, now)
    events, on_spend = announcements(notify, "spender", 1_500, record.request_id, now)
    contract_store.ledger.record_call(record, Settlement(events=events, on_spend=on_spend))
    assert Dispatcher(contract_store, sink.url).deliver_due() == 3
    assert [event["event"] for event in sink.accepted] == ["spend_tracked", "threshold_crossed", "budget_crossed"]


def test_a_failed_post_is_retried_later_and_the_rest_of_the_round_waits(contract_store, sinks):
    now = time.time()
    first, *rest = write_events(contract_store, 3, now)
    with WebhookSink(fail_first=1) as sink:
        dispatcher = Dispatcher(contract_store, sink.url, clock=lambda: now)
        assert dispatcher.deliver_due() == 0  # the first post failed: the round ends there
        assert [(json.loads(body)["event_id"], status) for _, body, status in sink.posts] == [(first, 500)]
        failed = {event.event_id: event for event in contract_store.outbox.list(None, 10)}[first]
        assert (failed.status, failed.attempts, failed.last_error) == ("pending", 1, "HTTP 500")
        assert now + 0.5 <= failed.next_attempt_at <= now + 1.5  # the first backoff: 1 s, ±50 % jitter
        assert dispatcher.deliver_due() == 2  # the rest went back untried, not leased
        dispatcher.clock = lambda: now + 60  # the retry is due
        assert dispatcher.deliver_due() == 1
        assert received(sink) == [*rest, first]  # the same event id, posted again
    assert statuses(contract_store) == {first: ("delivered", 2), rest[0]: ("delivered", 1), rest[1]: ("delivered", 1)}


def test_an_event_failing_past_its_retry_window_is_dead_and_stays_listed(contract_store, sinks, caplog):
    now = time.time()
    [old] = write_events(contract_store, 1, now - 2 * DAY)  # its 24 h of retries are over
    with WebhookSink(fail_first=1) as sink:
        assert Dispatcher(contract_store, sink.url).deliver_due() == 0
    [dead] = contract_store.outbox.list("dead", 10)
    assert (dead.event_id, dead.attempts, dead.last_error) == (old, 1, "HTTP 500")
    assert f"webhook event {old} (spend_tracked) is dead after 1 attempts" in caplog.text
    assert Dispatcher(contract_store, sinks[0].url).deliver_due() == 0  # never posted again


def test_a_slow_receiver_gets_what_the_claims_lease_cannot_cover_from_a_later_claim(contract_store, monkeypatch):
    monkeypatch.setattr(dispatch, "LEASE_SECONDS", 1.0)
    ids = write_events(contract_store, 12, time.time())
    with WebhookSink(delay=0.1) as sink:
        dispatcher = Dispatcher(contract_store, sink.url)
        first = dispatcher.deliver_due()
        assert 3 <= first <= 8  # ~0.1 s each; none started once it and the slowest would pass 0.75 s
        left = contract_store.outbox.claim(time.time(), 1.0, 100)  # given back, not left leased
        assert [event.event_id for event in left] == ids[first:]
        contract_store.outbox.release([event.event_id for event in left])
        while dispatcher.deliver_due():
            pass
        assert received(sink) == ids  # each once, in order


def test_dispatchers_delivering_at_once_post_every_event_once(contract_store, sinks):
    ids = write_events(contract_store, 200, time.time())
    one, other = sinks
    dispatchers = [Dispatcher(contract_store, sink.url, poll_seconds=0.1) for sink in sinks]
    for dispatcher in dispatchers:
        dispatcher.start()
    try:
        deadline = time.monotonic() + 30
        while len(one.accepted) + len(other.accepted) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for dispatcher in dispatchers:
            dispatcher.stop()
    posted = received(one) + received(other)
    assert sorted(posted) == sorted(ids)  # every event, none twice
    assert contract_store.outbox.list("pending", 10) == []


# -- retention (every engine) -------------------------------------------------------------------------


def test_delivered_events_past_their_retention_are_deleted_and_no_others(contract_store, sinks):
    sink, _ = sinks
    now = time.time()
    old_delivered = write_events(contract_store, 3, now - 9 * DAY)
    contract_store.outbox.delivered(old_delivered, now - 8 * DAY)
    recent_delivered = write_events(contract_store, 2, now - 9 * DAY)
    contract_store.outbox.delivered(recent_delivered, now - 6 * DAY)  # delivered late, within the retention
    [dead] = write_events(contract_store, 1, now - 30 * DAY)
    assert contract_store.outbox.failed(dead, "HTTP 500", now - 29 * DAY) == "dead"
    old_pending = write_events(contract_store, 2, now - 20 * DAY)
    dispatcher = Dispatcher(contract_store, sink.url, retention_seconds=7 * DAY)
    assert dispatcher.purge() == 3
    assert {event_id: status for event_id, (status, _) in statuses(contract_store).items()} == {
        **{event_id: "delivered" for event_id in recent_delivered},
        dead: "dead",
        **{event_id: "pending" for event_id in old_pending},
    }
    assert dispatcher.purge() == 0


def test_the_delivery_thread_purges_in_batches_as_it_starts(contract_store, sinks, monkeypatch):
    sink, _ = sinks
    monkeypatch.setattr(dispatch, "PURGE_BATCH", 4)
    now = time.time()
    delivered = write_events(contract_store, 10, now - 100)
    contract_store.outbox.delivered(delivered, now - 50)
    dispatcher = Dispatcher(contract_store, sink.url, retention_seconds=10)
    dispatcher.start()
    try:
        deadline = time.monotonic() + 10
        while contract_store.outbox.list("delivered", 100) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        dispatcher.stop()
    assert contract_store.outbox.list(None, 100) == []
