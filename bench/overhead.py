"""Measure the latency Tollgate adds to a call, against calling the upstream directly.

The fake upstream answers at once. For each concurrency level (`--concurrency`, default 1,32)
the same number of chat completions goes DIRECT to the fake upstream and THROUGH Tollgate, each
client thread on its own keep-alive `requests.Session`, after a warm-up. Prints a markdown table
of requests/s and p50/p99 latency with the difference (through minus direct), then the memory
(VmRSS) of the gunicorn master and its workers.

    python -m bench.overhead [--concurrency 1,32] [--requests N] [--workers 2]
"""

from __future__ import annotations

import argparse
import collections
import sys
import threading
import time
from dataclasses import (
    dataclass,
    field,
)

import requests

from bench import common

REQUEST_TIMEOUT = 30.0
USERS = 100
LOG_TAIL_LINES = 40


@dataclass
class Run:
    """The outcome of one measured run: latencies of the successful calls and failures by kind."""

    target: str
    concurrency: int
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: collections.Counter = field(default_factory=collections.Counter)

    def rate(self) -> float:
        """Successful calls per second."""
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def p(self, percent: float) -> float:
        """A latency percentile in milliseconds."""
        return common.percentile(self.latencies_ms, percent)


class Tickets:
    """Hands out at most `count` call numbers across threads, until `deadline`."""

    def __init__(self, count: int, deadline: float):
        self._next = 0
        self._count = count
        self._deadline = deadline
        self._lock = threading.Lock()

    def take(self) -> int | None:
        """The next call number, or None when the count or the time is used up."""
        with self._lock:
            if self._next >= self._count or time.monotonic() >= self._deadline:
                return None
            self._next += 1
            return self._next - 1


def parse_args() -> argparse.Namespace:
    """The command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,32", help="comma-separated client counts (default 1,32)")
    parser.add_argument(
        "--requests", type=int, default=None, help="calls per level and target (default 2000 for 1 client, else 4000)"
    )
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured calls before each run (default 200)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time bound of each run (default 60)")
    parser.add_argument(
        "--workers",
        type=int,
        default=common.DEFAULT_WORKERS,
        help="gunicorn workers (WEB_CONCURRENCY); default 2, gunicorn.conf.py's default",
    )
    args = parser.parse_args()
    args.levels = [int(level) for level in args.concurrency.split(",") if level.strip()]
    return args


def requests_for(level: int, requested: int | None) -> int:
    """How many calls to measure at `level` clients."""
    if requested is not None:
        return requested
    return 2000 if level == 1 else 4000


def client(session: requests.Session, url: str, tickets: Tickets, results: list, barrier: threading.Barrier) -> None:
    """One client thread: wait for the others, call until the tickets run out, append its results."""
    latencies: list[float] = []
    errors: collections.Counter = collections.Counter()
    barrier.wait(REQUEST_TIMEOUT)
    while (number := tickets.take()) is not None:
        body = common.chat_body(f"bench-user-{number % USERS}")
        started = time.perf_counter()
        try:
            response = session.post(url, json=body, headers=common.AUTH, timeout=REQUEST_TIMEOUT)
            status = response.status_code
        except requests.RequestException as exc:
            errors[type(exc).__name__] += 1
            continue
        elapsed_ms = (time.perf_counter() - started) * 1000
        if status == 200:
            latencies.append(elapsed_ms)
        else:
            errors[str(status)] += 1
    results.append((latencies, errors))


def load(url: str, sessions: list[requests.Session], count: int, max_seconds: float, run: Run) -> None:
    """Make `count` calls to `url` from one thread per session, all started together."""
    released: list[float] = []
    barrier = threading.Barrier(len(sessions), action=lambda: released.append(time.monotonic()))
    tickets = Tickets(count, time.monotonic() + max_seconds)
    results: list[tuple[list[float], collections.Counter]] = []
    threads = [
        threading.Thread(target=client, args=(session, url, tickets, results, barrier), daemon=True)
        for session in sessions
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + max_seconds + 2 * REQUEST_TIMEOUT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for latencies, errors in list(results):
        run.latencies_ms.extend(latencies)
        run.errors.update(errors)
    if len(results) < len(threads):
        run.errors["client threads not finished"] += len(threads) - len(results)
    run.seconds = time.monotonic() - released[0] if released else 0.0


def measure(target: str, url: str, level: int, count: int, args: argparse.Namespace) -> Run:
    """Warm up, then measure `count` calls to `url` with `level` clients."""
    sessions = [requests.Session() for _ in range(level)]
    try:
        load(url, sessions, args.warmup, args.max_seconds, Run(target, level))
        run = Run(target, level)
        load(url, sessions, count, args.max_seconds, run)
        return run
    finally:
        for session in sessions:
            session.close()


def table(runs: list[Run]) -> str:
    """The markdown table of the runs; through rows show the latency added over direct."""
    lines = [
        "| target | concurrency | requests | requests/s | p50 ms | p99 ms | added p50 ms | added p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    direct = {run.concurrency: run for run in runs if run.target == "direct"}
    for run in runs:
        added = ["", ""]
        base = direct.get(run.concurrency)
        if run.target != "direct" and base:
            added = [f"{run.p(50) - base.p(50):+.2f}", f"{run.p(99) - base.p(99):+.2f}"]
        lines.append(
            f"| {run.target} | {run.concurrency} | {len(run.latencies_ms)} | {run.rate():.0f} "
            f"| {run.p(50):.2f} | {run.p(99):.2f} | {added[0]} | {added[1]} |"
        )
    return "\n".join(lines)


def main() -> int:
    """Run every level against a fresh fake upstream and Tollgate; return the exit status."""
    args = parse_args()
    lifetime = len(args.levels) * 2 * (2 * args.max_seconds + 2 * REQUEST_TIMEOUT) + 120
    runs: list[Run] = []
    with common.fake_upstream(0, lifetime) as upstream:
        with common.tollgate(upstream, args.workers) as server:
            pid = server.process.pid
            print(f"tollgate: {args.workers} workers; RSS at start: {common.format_rss(common.tree_rss(pid))}")
            for level in args.levels:
                count = requests_for(level, args.requests)
                for target, base in (("direct", upstream.url), ("tollgate", server.url)):
                    print(f"running {target} x{level}: {count} calls", flush=True)
                    runs.append(measure(target, f"{base}/chat/completions", level, count, args))
            print(f"tollgate RSS after the run: {common.format_rss(common.tree_rss(pid))}")
            print()
            print(table(runs))
            failed = {f"{run.target} x{run.concurrency}": dict(run.errors) for run in runs if run.errors}
            if failed:
                print(f"\nfailed calls: {failed}")
                print("tollgate log (last lines):")
                print("\n".join(server.log().splitlines()[-LOG_TAIL_LINES:]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
