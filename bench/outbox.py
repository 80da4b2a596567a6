"""What the webhook outbox costs, piece by piece, in one process: `python -m bench.outbox`.

On a fresh SQLite file in a temporary folder, with the benchmark sink (`bench/sink.py`, at the
default priority here, so answers come back at once) as the receiver, it prints:

- rendering a `spend_tracked` event (`webhooks.events.spend_tracked`), CPU µs per event;
- writing events, one per write transaction as calls do (beside a customer's spend update),
  CPU µs per transaction with and without the event;
- claiming due events with `--backlog` (default 50,000) pending: wall ms per claim of 100,
  the time the claim holds the writer's turn that every call waits for;
- delivering `--events` (default 5,000) events with `Dispatcher.deliver_due`: claim, post and
  mark, CPU µs per event, one post at a time and pipelined `--depth` (default 16) at a time.

Bounded by the counts and the sink's lifetime; the sink is stopped by its pid.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import common
from spend.sqlite_outbox import add_events
from spend.store import open_store
from webhooks.dispatcher import Dispatcher
from webhooks.events import Notify, spend_tracked

NOTIFY = Notify(token="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
SINK_SECONDS = 300


def events(count: int, start: float) -> list:
    """`count` spend_tracked events, one per call, created a millisecond apart from `start`."""
    return [spend_tracked(NOTIFY, f"c{n % 100}", 1_234, start + n / 1000) for n in range(count)]


def store_in(folder: Path, name: str):
    store = open_store(f"sqlite:///{folder / name}")
    store.migrate()
    return store


def render(count: int) -> None:
    now = time.time()
    cpu = time.thread_time()
    for n in range(count):
        spend_tracked(NOTIFY, f"c{n % 100}", 1_234, now)
    print(f"| render a spend_tracked event | {1e6 * (time.thread_time() - cpu) / count:.1f} µs CPU |")


def write(folder: Path, count: int) -> None:
    store = store_in(folder, "write.db")
    batch = events(count, time.time())
    with store._write() as connection:
        connection.execute("CREATE TABLE spend (customer TEXT PRIMARY KEY, units INTEGER)")
        connection.executemany("INSERT INTO spend VALUES (?, 0)", [(f"c{n}",) for n in range(100)])
    for label, with_event in (("a call's write transaction, no event", False), ("the same with its event", True)):
        cpu = time.thread_time()
        for n, event in enumerate(batch):
            with store._write() as connection:
                connection.execute("UPDATE spend SET units = units + 1 WHERE customer = ?", (f"c{n % 100}",))
                if with_event:
                    add_events(connection, [event], time.time())
        print(f"| {label} | {1e6 * (time.thread_time() - cpu) / count:.1f} µs CPU |")
    store.close()


def claim(folder: Path, backlog: int) -> None:
    store = store_in(folder, "claim.db")
    with store._write() as connection:
        add_events(connection, events(backlog, time.time() - backlog / 1000), time.time())
    took = []
    for _ in range(20):
        began = time.perf_counter()
        claimed = store.claim_events(time.time(), 45.0, 100)
        took.append(time.perf_counter() - began)
        store.events_delivered([event.event_id for event in claimed], time.time())
    print(f"| claim 100 of {backlog:,} pending | {1000 * statistics.median(took):.2f} ms (median of 20) |")
    store.close()


def deliver(folder: Path, url: str, count: int, depth: int) -> None:
    store = store_in(folder, f"deliver-{depth}.db")
    with store._write() as connection:
        add_events(connection, events(count, time.time() - count / 1000), time.time())
    dispatcher = Dispatcher(store, url, depth=depth)
    cpu, delivered = time.thread_time(), 0
    while batch := dispatcher.deliver_due():
        delivered += batch
    label = "one at a time" if depth == 1 else f"{depth} pipelined"
    print(f"| deliver {delivered:,} events, {label} | {1e6 * (time.thread_time() - cpu) / delivered:.1f} µs CPU |")
    store.close()


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
