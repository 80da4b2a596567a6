"""Hold many slow LLM calls in flight at once through Tollgate.

The fake upstream answers every call after `--delay-ms` (default 2000 ms); `--calls` (default
500) clients all POST /chat/completions at the same instant, one thread each, each with its own
`user`. Ideally the whole burst takes about one delay. Exits 1 if any call failed or timed out.

    python -m bench.concurrency [--calls 500] [--delay-ms 2000] [--workers 2]
"""

from __future__ import annotations

import argparse
import collections
import sys
import threading
import time
from dataclasses import dataclass

import requests

from bench import common

REQUEST_TIMEOUT = 30.0
START_TIMEOUT = 60.0
UPSTREAM_LIFETIME = 600.0
LOG_TAIL_LINES = 40
DETAIL_LINES = 5


@dataclass
class Outcome:
    """How one call ended: an HTTP status or an exception name, and when."""

    status: str
    finished: float
    seconds: float
    detail: str = ""


def parse_args() -> argparse.Namespace:
    """The command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="simultaneous calls (default 500)")
    parser.add_argument("--delay-ms", type=int, default=2000, help="fake upstream delay (default 2000)")
    parser.add_argument(
        "--workers",
        type=int,
        default=common.DEFAULT_WORKERS,
        help="gunicorn workers (WEB_CONCURRENCY); default 2, gunicorn.conf.py's default",
    )
    return parser.parse_args()


def call(url: str, user: str) -> Outcome:
    """One chat completion; never raises."""
    started = time.monotonic()
    detail = ""
    try:
        response = requests.post(url, json=common.chat_body(user), headers=common.AUTH, timeout=REQUEST_TIMEOUT)
        status = str(response.status_code)
        if response.status_code != 200:
            detail = response.text[:300]
    except requests.RequestException as exc:
        status = type(exc).__name__
        detail = str(exc)[:300]
    finished = time.monotonic()
    return Outcome(status=status, finished=finished, seconds=finished - started, detail=detail)


def burst(url: str, calls: int) -> tuple[float, list[Outcome]]:
    """Start `calls` threads, release them together, and return (start time, their outcomes)."""
    outcomes: list[Outcome | None] = [None] * calls
    released: list[float] = []
    barrier = threading.Barrier(calls, action=lambda: released.append(time.monotonic()))

    def run(index: int) -> None:
        try:
            barrier.wait(START_TIMEOUT)
        except threading.BrokenBarrierError:
            outcomes[index] = Outcome("BrokenBarrier", time.monotonic(), 0.0)
            return
        outcomes[index] = call(url, f"bench-user-{index}")

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(calls)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + START_TIMEOUT + REQUEST_TIMEOUT + 10
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    start = released[0] if released else time.monotonic()
    now = time.monotonic()
    return start, [outcome or Outcome("NotFinished", now, now - start) for outcome in outcomes]


def report(start: float, outcomes: list[Outcome], delay_ms: int) -> int:
    """Print the summary; return how many calls failed."""
    by_status = collections.Counter(outcome.status for outcome in outcomes)
    ok = by_status.pop("200", 0)
    wall = max(outcome.finished for outcome in outcomes) - start
    seconds = [outcome.seconds for outcome in outcomes]
    print(f"calls: {len(outcomes)}")
    print(f"total wall time: {wall:.2f} s")
    print(f"succeeded (200): {ok}")
    print(f"failed: {sum(by_status.values())} {dict(sorted(by_status.items()))}")
    p50 = common.percentile(seconds, 50)
    p99 = common.percentile(seconds, 99)
    print(f"latency s: p50 {p50:.2f}, p99 {p99:.2f}, max {max(seconds):.2f}")
    slow = sum(1 for value in seconds if value > 1.5 * delay_ms / 1000)
    print(f"calls slower than 1.5 x the upstream delay: {slow}")
    details = collections.Counter(f"{o.status}: {o.detail}" for o in outcomes if o.status != "200")
    for detail, count in details.most_common(DETAIL_LINES):
        print(f"  {count} x {detail}")
    return sum(by_status.values())


def main() -> int:
    """Run the burst against a fresh fake upstream and Tollgate; return the exit status."""
    args = parse_args()
    with common.fake_upstream(args.delay_ms, UPSTREAM_LIFETIME) as upstream:
        with common.tollgate(upstream, args.workers) as server:
            print(f"tollgate: {args.workers} workers, upstream delay {args.delay_ms} ms", flush=True)
            start, outcomes = burst(f"{server.url}/chat/completions", args.calls)
            failed = report(start, outcomes, args.delay_ms)
            print(f"upstream calls served: {upstream.calls()}")
            print(f"tollgate RSS after the burst: {common.format_rss(common.tree_rss(server.process.pid))}")
            if failed:
                print("tollgate log (last lines):")
                print("\n".join(server.log().splitlines()[-LOG_TAIL_LINES:]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
