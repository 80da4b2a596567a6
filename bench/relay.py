"""Tollgate against a naive relay, in one run: `python -m bench.relay`.

The capacity figures compare Tollgate's throughput with what a naive relay serves on the same
machine (`bench/naive_relay.py`: Flask + requests + one SQLite upsert per call, gunicorn sync x 2),
and its added latency at one client with the upstream reached directly. Tollgate runs with full
accounting: every customer has a budget (admission, reservation, settlement), the default budget
tier exists, and webhooks are on (to `bench/sink.py`).

For each client count (`--concurrency`, default 1,32), alternating in one run so that a drift of the
machine falls on all three alike: the fast fake upstream directly, Tollgate, the naive relay; wrk
for `--duration` seconds each (non-streamed calls), repeated `--rounds` times (default 3). Prints
each point and, per level, the medians: requests/s, p50 and p99, the latency added over the direct
point, and Tollgate's throughput as a multiple of the naive relay's.

    python -m bench.relay [--concurrency 1,32] [--duration 8] [--rounds 3] [--databases sqlite]

Everything runs on 127.0.0.1, bounded in time; every process started is stopped by its pid.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import requests

from bench import common, wrk
from bench.run import USER_PREFIX, create_customers, started_tollgate
from tests.servers import REPO, Server, free_port, stop


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,32", help="client counts (default 1,32)")
    parser.add_argument("--duration", type=int, default=8, help="seconds of load per point (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every point (default 3)")
    parser.add_argument("--users", type=int, default=100, help="customers the calls cycle over (default 100)")
    parser.add_argument("--database", default="sqlite", choices=common.DATABASES, help="Tollgate's store")
    args = parser.parse_args()
    args.levels = [int(level) for level in args.concurrency.split(",") if level.strip()]
    args.lifetime = len(args.levels) * args.rounds * 3 * (args.duration + wrk.EXIT_MARGIN + 2) + 300
    return args


@contextmanager
def naive_relay(upstream: common.Upstream, folder: Path):
    """The naive relay under gunicorn sync x 2 on a fresh SQLite file; stopped by its pid."""
    port = free_port()
    env = {**os.environ, "NAIVE_UPSTREAM": upstream.url, "NAIVE_DATABASE": str(folder / "naive.db")}
    settings = folder / "naive.conf.py"  # gunicorn's defaults, not the gunicorn.conf.py of the repository
    settings.write_text("")
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(settings),
        "-w",
        "2",
        "-k",
        "sync",
        "-b",
        f"127.0.0.1:{port}",
    ]
    log_path = folder / "naive.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*command, "bench.naive_relay:app"], cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        server = Server(f"http://127.0.0.1:{port}", process, log_path)
        try:
            wait_for_relay(server)
            yield server
        finally:
            stop(process)


def wait_for_relay(server: Server) -> None:
    """The relay has no readiness route: one call through it, retried for 30 s."""
    for _ in range(300):
        try:
            body = common.chat_body("warm-up")
            if requests.post(f"{server.url}/chat/completions", json=body, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        if server.process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"the naive relay did not start:\n{server.log()}")


def main() -> int:
    args = parse_args()
    binary = wrk.find_or_say()
    if binary is None:
        return 2
    load = wrk.Load(common.MASTER_KEY, args.users, USER_PREFIX, common.MODEL, stream=False)
    results: dict[tuple[int, str], list[wrk.Result]] = {}
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tollgate-relay-")))
        upstream = stack.enter_context(common.fake_upstream(0, args.lifetime))
        sink = stack.enter_context(common.webhook_sink(args.lifetime))
        tollgate, _, _ = stack.enter_context(
            started_tollgate(upstream, common.DEFAULT_WORKERS, sink.url, args.database)
        )
        create_customers(tollgate, args.users)
        relay = stack.enter_context(naive_relay(upstream, folder))
        targets = {"direct": f"{upstream.url}/chat/completions", "tollgate": f"{tollgate.url}/chat/completions"}
        targets["naive relay"] = f"{relay.url}/chat/completions"
        for url in targets.values():  # warm-up, unmeasured
            wrk.run(binary, url, 8, 2, load)
        for round_ in range(1, args.rounds + 1):
            for clients in args.levels:
                for name, url in targets.items():
                    result = wrk.run(binary, url, clients, args.duration, load)
                    results.setdefault((clients, name), []).append(result)
                    print(
                        f"round {round_} x{clients} {name}: {result.rate():.0f} req/s, p50 {result.p50_ms:.2f} ms, "
                        f"p99 {result.p99_ms:.2f} ms, errors {result.error_text()}",
                        flush=True,
                    )
    print(f"\n{args.duration} s per point, {args.rounds} rounds, medians; Tollgate on {args.database}, budgets and "
          "webhooks on\n")  # fmt: skip
    print(summary(results, args.levels))
    return 1 if any(result.errors() for runs in results.values() for result in runs) else 0


def summary(results: dict[tuple[int, str], list[wrk.Result]], levels: list[int]) -> str:
    lines = [
        "| clients | target | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | × naive relay |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for clients in levels:
        medians = {}
        for name in ("direct", "tollgate", "naive relay"):
            runs = results[(clients, name)]
            medians[name] = tuple(statistics.median(getattr(r, f)() if f == "rate" else getattr(r, f) for r in runs)
                                  for f in ("rate", "p50_ms", "p99_ms"))  # fmt: skip
        direct = medians["direct"]
        for name, (rate, p50, p99) in medians.items():
            added = ("", "") if name == "direct" else (f"{p50 - direct[1]:+.2f}", f"{p99 - direct[2]:+.2f}")
            ratio = "" if name == "direct" else f"{rate / medians['naive relay'][0]:.2f}"
            lines.append(
                f"| {clients} | {name} | {rate:.0f} | {p50:.2f} | {p99:.2f} | {added[0]} | {added[1]} | {ratio} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
