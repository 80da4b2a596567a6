"""Measure the latency Tollgate adds to a call, against calling the upstream directly.

The fake upstream answers at once. For each concurrency level (`--concurrency`, default 1,32)
the same number of chat completions goes DIRECT to the fake upstream and THROUGH Tollgate, each
client thread on its own keep-alive `requests.Session`, after a warm-up. Prints a markdown table
of requests/s and p50/p99 latency with the difference (through minus direct), then the memory
(VmRSS) of the gunicorn master and its workers.

With `--webhooks`, Tollgate runs with webhooks on (`alerting: ["webhook"]`, `WEBHOOK_URL` at a
local sink on 127.0.0.1: `tests/webhook_sink.py` in its own process, `bench/sink.py`, so its work
stays off the load generator's GIL). Every call carries a `user`, so every call writes a
`spend_tracked` event. After the run it prints how many events the sink accepted next to the
calls made through Tollgate (warm-up included), waiting at most `--drain-seconds` for the outbox
to drain. `--compare-webhooks` measures DIRECT once, then a fresh Tollgate with webhooks off,
then another with webhooks on, and prints one table.

    python -m bench.overhead [--concurrency 1,32] [--requests N] [--workers 2]
    python -m bench.overhead --webhooks | --compare-webhooks [--drain-seconds 10]
"""

from __future__ import annotations

import argparse
import collections
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import (
    dataclass,
    field,
)

import requests

from bench import common
from tests.servers import Server

REQUEST_TIMEOUT = 30.0
USERS = 100
LOG_TAIL_LINES = 40
DIRECT = "direct"
TOLLGATE = {False: "tollgate", True: "tollgate+webhooks"}  # by whether webhooks are on
STARTUP_SECONDS = 60.0  # bound on starting one Tollgate, for the upstream's lifetime


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

    def answered(self) -> int:
        """Calls answered 200."""
        return len(self.latencies_ms)

    def calls(self) -> int:
        """Calls made: answered 200, another status, or an exception."""
        return self.answered() + sum(self.errors.values())


@dataclass
class Delivery:
    """What the webhook sink received from one Tollgate with webhooks on."""

    calls: int
    answered: int
    accepted: int
    distinct: int
    drain_seconds: float

    def summary(self) -> str:
        """One line: events accepted next to the calls, and how long the outbox took to drain."""
        drained = (
            f"all in {self.drain_seconds:.1f} s after the last call"
            if self.accepted >= self.answered
            else f"{self.answered - self.accepted} missing after waiting {self.drain_seconds:.1f} s"
        )
        return (
            f"webhook events accepted by the sink: {self.accepted} ({self.distinct} distinct event_id) "
            f"for {self.calls} calls through Tollgate, warm-up included ({self.answered} answered 200); {drained}"
        )


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
    hooks = parser.add_mutually_exclusive_group()
    hooks.add_argument("--webhooks", action="store_true", help="run Tollgate with webhooks on, to a local sink")
    hooks.add_argument(
        "--compare-webhooks", action="store_true", help="run Tollgate with webhooks off, then on; one table"
    )
    parser.add_argument(
        "--drain-seconds", type=float, default=10.0, help="longest wait for the webhook outbox to drain (default 10)"
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


def measure(target: str, url: str, level: int, count: int, args: argparse.Namespace) -> tuple[Run, Run]:
    """Warm up, then measure `count` calls to `url` with `level` clients; return (warm-up, run)."""
    sessions = [requests.Session() for _ in range(level)]
    try:
        warmup = Run(target, level)
        load(url, sessions, args.warmup, args.max_seconds, warmup)
        run = Run(target, level)
        load(url, sessions, count, args.max_seconds, run)
        return warmup, run
    finally:
        for session in sessions:
            session.close()


def table(runs: list[Run]) -> str:
    """The markdown table of the runs; through rows show the latency added over direct."""
    lines = [
        "| target | concurrency | requests | requests/s | p50 ms | p99 ms | added p50 ms | added p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    direct = {run.concurrency: run for run in runs if run.target == DIRECT}
    for run in sorted(runs, key=lambda run: run.concurrency):
        added = ["", ""]
        base = direct.get(run.concurrency)
        if run.target != DIRECT and base:
            added = [f"{run.p(50) - base.p(50):+.2f}", f"{run.p(99) - base.p(99):+.2f}"]
        lines.append(
            f"| {run.target} | {run.concurrency} | {len(run.latencies_ms)} | {run.rate():.0f} "
            f"| {run.p(50):.2f} | {run.p(99):.2f} | {added[0]} | {added[1]} |"
        )
    return "\n".join(lines)


def webhooks_difference(runs: list[Run]) -> list[str]:
    """Per level, Tollgate with webhooks on minus off: requests/s, p50 and p99."""
    off = {run.concurrency: run for run in runs if run.target == TOLLGATE[False]}
    lines = []
    for on in (run for run in runs if run.target == TOLLGATE[True]):
        base = off.get(on.concurrency)
        if base:
            lines.append(
                f"webhooks on minus off x{on.concurrency}: requests/s {on.rate() - base.rate():+.0f}, "
                f"p50 {on.p(50) - base.p(50):+.2f} ms, p99 {on.p(99) - base.p(99):+.2f} ms"
            )
    return lines


def drain(sink: common.Sink, calls: int, answered: int, seconds: float) -> Delivery:
    """Wait at most `seconds` until the sink accepted one event per answered call; count them."""
    started = time.monotonic()
    accepted, distinct = sink.wait_for(answered, seconds)
    waited = time.monotonic() - started
    return Delivery(calls=calls, answered=answered, accepted=accepted, distinct=distinct, drain_seconds=waited)


def run_levels(
    server: Server, upstream: common.Upstream, sink: common.Sink | None, with_direct: bool, args: argparse.Namespace
) -> tuple[list[Run], Delivery | None]:
    """Measure every level through `server` (and DIRECT first when `with_direct`); drain the sink."""
    target = TOLLGATE[sink is not None]
    runs: list[Run] = []
    through: list[Run] = []
    for level in args.levels:
        count = requests_for(level, args.requests)
        plan = ([(DIRECT, upstream.url)] if with_direct else []) + [(target, server.url)]
        for name, base in plan:
            print(f"running {name} x{level}: {count} calls", flush=True)
            warmup, run = measure(name, f"{base}/chat/completions", level, count, args)
            runs.append(run)
            if name == target:
                through += [warmup, run]
        if sink is not None:
            answered = sum(run.answered() for run in through)
            print(f"  events accepted at the end of x{level}: {sink.counts()[0]} of {answered}", flush=True)
    if sink is None:
        return runs, None
    calls = sum(run.calls() for run in through)
    answered = sum(run.answered() for run in through)
    return runs, drain(sink, calls, answered, args.drain_seconds)


def run_tollgate(
    upstream: common.Upstream, webhooks: bool, with_direct: bool, args: argparse.Namespace
) -> tuple[list[Run], Delivery | None]:
    """Start a fresh Tollgate (after its webhook sink when `webhooks`), measure every level, stop both."""
    with ExitStack() as stack:
        sink = stack.enter_context(common.webhook_sink(args.lifetime)) if webhooks else None
        server = stack.enter_context(common.tollgate(upstream, args.workers, sink.url if sink else None))
        pid = server.process.pid
        hooks = f"webhooks on, sink {sink.url} (pid {sink.process.pid})" if sink else "webhooks off"
        print(f"tollgate: {args.workers} workers, {hooks}; RSS at start: {common.format_rss(common.tree_rss(pid))}")
        runs, delivery = run_levels(server, upstream, sink, with_direct, args)
        print(f"tollgate RSS after the run: {common.format_rss(common.tree_rss(pid))}")
        if delivery is not None:
            print(delivery.summary())
        if any(run.errors for run in runs):
            print("tollgate log (last lines):")
            print("\n".join(server.log().splitlines()[-LOG_TAIL_LINES:]))
        return runs, delivery


def upstream_lifetime(args: argparse.Namespace, sides: int) -> float:
    """Seconds the fake upstream must live: every bounded load, drain and start-up, plus a margin."""
    load_bound = args.max_seconds + 2 * REQUEST_TIMEOUT
    loads = len(args.levels) * (1 + sides) * 2
    return loads * load_bound + sides * (STARTUP_SECONDS + args.drain_seconds) + 120


def main() -> int:
    """Run every level against a fresh fake upstream and Tollgate(s); return the exit status."""
    args = parse_args()
    sides = [False, True] if args.compare_webhooks else [args.webhooks]
    args.lifetime = upstream_lifetime(args, len(sides))
    runs: list[Run] = []
    deliveries: list[Delivery] = []
    with common.fake_upstream(0, args.lifetime) as upstream:
        for index, webhooks in enumerate(sides):
            side_runs, delivery = run_tollgate(upstream, webhooks, index == 0, args)
            runs += side_runs
            deliveries += [delivery] if delivery else []
    print()
    print(table(runs))
    for line in webhooks_difference(runs) + [delivery.summary() for delivery in deliveries]:
        print(line)
    failed = {f"{run.target} x{run.concurrency}": dict(run.errors) for run in runs if run.errors}
    if failed:
        print(f"\nfailed calls: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
