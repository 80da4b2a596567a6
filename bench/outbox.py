"""What webhook events cost, piece by piece, in one process: `python -m bench.outbox`.

For each database (`--databases`, default `sqlite,postgres`: a fresh SQLite file in a temporary
folder, a throwaway PostgreSQL database on 127.0.0.1 dropped at the end), with the benchmark
sink (`bench/sink.py`, at the default priority here, so answers come back at once) as the
receiver, it prints:

- rendering a `spend_tracked` event (`webhooks.events.spend_tracked`), CPU µs per event;
- a call's write transaction (`record_call`) with webhooks off, and with its `spend_tracked`
  event inserted into the outbox, CPU µs per call of this process (PostgreSQL's own work is in
  the server);
- claiming and marking 100 events with `--backlog` (default 50,000) pending: wall ms per claim;
- delivering `--events` (default 5,000) events with `Dispatcher.deliver_due`: claim, post one at
  a time on a kept-open connection, mark; CPU µs per event.

Bounded by the counts and the sink's lifetime; the sink is stopped by its pid.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from bench import common
from providers.base import Usage
from spend.engines import open_store
from spend.store import CallRecord, Settlement
from webhooks.dispatcher import Dispatcher
from webhooks.events import Notify, announcements, spend_tracked

NOTIFY = Notify(token="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
SINK_SECONDS = 300


@contextmanager
def store_on(url: str):
    store = open_store(url)
    store.engine.migrate()
    try:
        yield store
    finally:
        store.engine.close()


def calls(store, count: int, start: float, announce: bool = True) -> None:
    """`count` calls settled as `calls.settle` settles them, ended a millisecond apart from `start`."""
    for n in range(count):
        ended, request_id, customer = start + n / 1000, str(uuid.uuid4()), f"c{n % 100}"
        record = CallRecord(request_id, customer, "m", "mock/m", "d", Usage(), 1_234, ended, ended)
        settlement = Settlement()
        if announce:
            events, on_spend = announcements(NOTIFY, customer, 1_234, request_id, ended)
            settlement = Settlement(events=events, on_spend=on_spend)
        store.ledger.record_call(record, settlement)


def render(count: int) -> None:
    now = time.time()
    cpu = time.thread_time()
    for n in range(count):
        spend_tracked(NOTIFY, f"c{n % 100}", 1_234, now)
    print(f"| | render a spend_tracked event | {1e6 * (time.thread_time() - cpu) / count:.1f} µs CPU |")


def write(kind: str, url: str, count: int) -> None:
    with store_on(url) as store:
        calls(store, 200, time.time(), announce=False)  # the customers exist, as in steady traffic
        for label, announce in (("a call's write transaction, webhooks off", False), ("the same, event written", True)):
            cpu = time.thread_time()
            calls(store, count, time.time(), announce)
            print(f"| {kind} | {label} | {1e6 * (time.thread_time() - cpu) / count:.1f} µs CPU |")


def claim(kind: str, url: str, backlog: int) -> None:
    with store_on(url) as store:
        calls(store, backlog, time.time() - backlog / 1000)
        took = []
        for _ in range(20):
            began = time.perf_counter()
            claimed = store.outbox.claim(time.time(), 45.0, 100)
            store.outbox.delivered([event.event_id for event in claimed], time.time())
            took.append(time.perf_counter() - began)
        print(f"| {kind} | claim and mark 100 of {backlog:,} pending | {1000 * statistics.median(took):.2f} ms wall |")


def deliver(kind: str, url: str, sink_url: str, count: int) -> None:
    with store_on(url) as store:
        calls(store, count, time.time() - count / 1000)
        dispatcher = Dispatcher(store, sink_url)
        cpu, delivered = time.thread_time(), 0
        while batch := dispatcher.deliver_due():
            delivered += batch
        print(f"| {kind} | deliver {delivered:,} events | {1e6 * (time.thread_time() - cpu) / delivered:.1f} µs CPU |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="events written and delivered (default 5000)")
    parser.add_argument("--backlog", type=int, default=50_000, help="events pending for the claim (default 50000)")
    parser.add_argument("--databases", default="sqlite,postgres", help="engines (default sqlite,postgres)")
    args = parser.parse_args()
    with common.webhook_sink(SINK_SECONDS, nice=0) as sink:
        print("| database | what | cost |\n|---|---|---:|")
        render(args.events)
        with tempfile.TemporaryDirectory(prefix="tollgate-outbox-") as folder:
            for kind in args.databases.split(","):
                with common.database(kind, Path(folder)) as url:
                    write(kind, url, args.events)
                with common.database(kind, Path(folder)) as url:
                    claim(kind, url, args.backlog)
                with common.database(kind, Path(folder)) as url:
                    deliver(kind, url, sink.url, args.events)
    return 0


if __name__ == "__main__":
    sys.exit(main())
