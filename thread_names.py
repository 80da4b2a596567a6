"""Tollgate's background threads by name at the OS level, as `top -H`, `ps -L` and
`/proc/<pid>/task/<tid>/comm` show them (Python names its threads for itself only).

So an operator can see what the delivery thread or the WAL checkpoint thread of a worker costs
next to the threads that serve calls, and the benchmark harness counts the delivery threads' CPU
(`bench/run.py`).
"""

from __future__ import annotations

import threading

DELIVERY = "tg-webhooks"  # webhooks.dispatcher's thread, one per worker
CHECKPOINT = "tg-checkpoint"  # spend.sqlite's WAL checkpoint thread, one per worker
HEADER_WATCH = "tg-header-watch"  # workers.HeaderWatch: 408 for requests whose headers stall, one per worker
RETENTION = "tg-retention"  # spend.retention's pruning of old spend-log rows, one per worker
DRAIN = "tg-drain"  # lifecycle's wait for in-flight calls after SIGTERM, one per stopping worker


def name_this_thread(name: str) -> None:
    """Give the calling thread `name` (the kernel keeps 15 bytes) where the OS allows it (Linux)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm:
            comm.write(name[:15])
    except OSError:
        pass  # no /proc (not Linux) or not writable: the thread keeps the process's name
