"""What webhook events cost, piece by piece, in one process: `python -m bench.outbox`.

On a fresh SQLite file in a temporary folder, with the benchmark sink (`bench/sink.py`, at the
default priority here, so answers come back at once) as the receiver, it prints:

- rendering a `spend_tracked` event (`webhooks.events.spend_tracked`), CPU µs per event (done
  by the dispatcher, from the call's spend-log row);
- a call's write transaction (`record_call`) with webhooks off and with its `spend_tracked`
  event announced in its spend-log row, CPU µs per call;
- claiming 100 events with `--backlog` (default 50,000) pending, from the spend log
  (`claim_stream`) and from the outbox (`claim_events`, budget events and retries): wall ms
  per claim;
- delivering `--events` (default 5,000) calls' events with `Dispatcher.deliver_due`: claim,
  render, post and move the cursor, CPU µs per event, one post at a time and pipelined
  `--depth` (default 16) at a time.

Bounded by the counts and the sink's lifetime; the sink is stopped by its pid.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from spend.sqlite_outbox import add_events

from bench import common
from providers.base import Usage
from spend.store import CallRecord, Settlement, open_store
from webhooks.dispatcher import Dispatcher
from webhooks.events import Notify, spend_tracked

NOTIFY = Notify(token="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
SINK_SECONDS = 300


def events(count: int, start: float) -> list:
    """`count` spend_tracked events, one per call, created a millisecond apart from `start`."""
    return [spend_tracked(NOTIFY, f"c{n % 100}", 1_234, start + n / 1000) for n in range(count)]


def calls(store, count: int, start: float, notify: Notify | None = NOTIFY) -> None:
    """`count` calls settled as `calls.settle` settles them, ended a millisecond apart from `start`."""
    for n in range(count):
        ended = start + n / 1000
        record = CallRecord(str(uuid.uuid4()), f"c{n % 100}", "m", "mock/m", "d", Usage(), 1_234, ended, ended)
        store.ledger.record_call(record, Settlement(notify=notify))


def store_in(folder: Path, name: str):
    store = open_store(f"sqlite:///{folder / name}")
    store.engine.migrate()
    return store


def render(count: int) -> None:
    now = time.time()
    cpu = time.thread_time()
    for n in range(count):
        spend_tracked(NOTIFY, f"c{n % 100}", 1_234, now)
    print(f"| render a spend_tracked event | {1e6 * (time.thread_time() - cpu) / count:.1f} µs CPU |")


def write(folder: Path, count: int) -> None:
    store = store_in(folder, "write.db")
    calls(store, 200, time.time(), None)  # the customers exist, as in steady traffic
    for label, notify in (("a call's write transaction, webhooks off", None), ("the same, event announced", NOTIFY)):
        cpu = time.thread_time()
        calls(store, count, time.time(), notify)
        print(f"| {label} | {1e6 * (time.thread_time() - cpu) / count:.1f} µs CPU |")
    store.engine.close()


def claim(folder: Path, backlog: int) -> None:
    store = store_in(folder, "claim.db")
    calls(store, backlog, time.time() - backlog / 1000)
    with store._write() as connection:
        add_events(connection, events(backlog, time.time() - backlog / 1000), time.time())
    for label, take in (("from the spend log", _claim_stream), ("from the outbox", _claim_outbox)):
        took = []
        for _ in range(20):
            began = time.perf_counter()
            take(store)
            took.append(time.perf_counter() - began)
        print(f"| claim 100 of {backlog:,} pending, {label} | {1000 * statistics.median(took):.2f} ms (median of 20) |")
    store.engine.close()


def _claim_stream(store) -> None:
    claimed = store.claim_stream(time.time(), 45.0, 100)
    store.stream_settled(claimed, len(claimed.events), [], time.time())


def _claim_outbox(store) -> None:
    claimed = store.outbox.claim(time.time(), 45.0, 100)
    store.outbox.delivered([event.event_id for event in claimed], time.time())


def deliver(folder: Path, url: str, count: int, depth: int) -> None:
    store = store_in(folder, f"deliver-{depth}.db")
    calls(store, count, time.time() - count / 1000)
    dispatcher = Dispatcher(store, url, depth=depth)
    cpu, delivered = time.thread_time(), 0
    while batch := dispatcher.deliver_due():
        delivered += batch
    label = "one at a time" if depth == 1 else f"{depth} pipelined"
    print(f"| deliver {delivered:,} events, {label} | {1e6 * (time.thread_time() - cpu) / delivered:.1f} µs CPU |")
    store.engine.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="events written and delivered (default 5000)")
    parser.add_argument("--backlog", type=int, default=50_000, help="events pending for the claim (default 50000)")
    parser.add_argument("--depth", type=int, default=16, help="pipelined posts (default 16)")
    args = parser.parse_args()
    with common.webhook_sink(SINK_SECONDS, nice=0) as sink:
        print("| what | cost |\n|---|---:|")
        with tempfile.TemporaryDirectory(prefix="tollgate-outbox-") as folder:
            render(args.events)
            write(Path(folder), args.events)
            claim(Path(folder), args.backlog)
            for depth in (1, args.depth):
                deliver(Path(folder), sink.url, args.events, depth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
