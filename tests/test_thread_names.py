"""A worker's background threads carry their names at the OS level (`top -H`, `ps -L`, /proc),
which is how an operator, and `bench/run.py`, tell their CPU from the calls'."""

from __future__ import annotations

import os
import time
from pathlib import Path

from spend.engines import open_store
from tests.webhook_sink import WebhookSink
from thread_names import CHECKPOINT, DELIVERY
from webhooks.dispatcher import Dispatcher


def os_thread_names() -> list[str]:
    names = []
    for task in Path(f"/proc/{os.getpid()}/task").glob("*"):
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:
            continue  # a thread that ended meanwhile
    return names


def counts(timeout: float, wanted: dict[str, int]) -> dict[str, int]:
    """How many threads carry each name, once they are `wanted` (or `timeout` has passed)."""
    deadline = time.monotonic() + timeout
    while True:
        names = os_thread_names()
        found = {name: names.count(name) for name in wanted}
        if found == wanted or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def test_the_delivery_and_checkpoint_threads_are_named_for_the_os(database_url):
    store = open_store(database_url("sqlite", "spend.db"))  # the checkpoint thread is SQLite's
    store.engine.migrate()
    with WebhookSink() as sink:
        dispatcher = Dispatcher(store, sink.url)
        before = {DELIVERY: os_thread_names().count(DELIVERY), CHECKPOINT: os_thread_names().count(CHECKPOINT)}
        dispatcher.start()
        store.engine.start_background()
        try:
            running = {name: count + 1 for name, count in before.items()}
            assert counts(5.0, running) == running
        finally:
            dispatcher.stop()
            store.engine.stop_background()
            store.engine.close()
    assert counts(5.0, before) == before
    # The process and the threads that serve calls keep their own name.
    assert Path(f"/proc/{os.getpid()}/comm").read_text().strip() not in (DELIVERY, CHECKPOINT)
