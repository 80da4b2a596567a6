"""Hold thousands of slow LLM calls at once, straight and through Tollgate: `python -m bench.inflight`.

What limits a box serving LLM calls is how many it holds at once. The fake upstream
(`tests/fake_upstream.py`, asyncio: a waiting answer costs it a coroutine) answers each call
after `--delay` seconds; with `--stream` it streams the answer instead, its pieces spread over
the same `--delay`. For each count of `--calls`, that many clients (one OS thread each, on a
small stack, `http.client` on their own connection, spread over `--client-processes`
processes) are released together and each makes one call, first straight to the upstream,
then through a fresh Tollgate on each of `--databases` (the Procfile's `web:` command, a new
store). Every call is from one of `--users` customers
without a budget of their own, served under a default budget tier (`max_end_user_budget_id`),
so admission reserves and settlement charges as in production; `--webhooks` turns on
`spend_tracked` events to a local receiver (`bench/sink.py`).

Reported per run: calls answered 200 (a stream counts only when read to `data: [DONE]`), the
errors by kind, the wall time from the release to the last answer, latency p50 / p99, and for
Tollgate its peak RSS (master and workers together, sampled every 0.25 s), the CPU of those
processes per call, and a snapshot taken near the end of the delay, while every call is held:
RSS and thread count of each process, the SQLite connections open (file descriptors on the
database file) or the PostgreSQL server's backends on the database. A run still going
`--timeout` seconds after the release is abandoned (its calls count as `timeout`).

The worker model is chosen by environment for gunicorn, passed with `--env` (repeatable), e.g.
`--env GUNICORN_THREADS=6000` or `--env GUNICORN_CMD_ARGS="--worker-class gevent --backlog 4096"`
(gunicorn's own command-line settings override gunicorn.conf.py's).

    python -m bench.inflight --calls 1000,3000,10000 --delay 10 [--stream] [--databases sqlite,postgres]
        [--webhooks] [--users 100] [--workers 2] [--timeout 120] [--client-processes 4] [--env NAME=VALUE ...]

Everything runs on 127.0.0.1; every process started is stopped by its pid. The file limit
(RLIMIT_NOFILE) is raised to its hard limit, which the processes started here inherit: 10,000
calls hold 10,000 client sockets and Tollgate as many on each side. Exits 1 when a call failed.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

from bench import common
from bench.run import PeakRss, tree_cpu_seconds
from tests.servers import Server, tollgate_server

TIER = "bench-tier"
TIER_BUDGET = 1000000  # USD: never reached
CLIENT_STACK_BYTES = 256 * 1024  # a client thread only waits on its socket
STREAM_PIECES = 2  # content pieces of a streamed answer; with role, finish, usage and [DONE]: 6 events
STREAM_EVENTS = STREAM_PIECES + 4
UPSTREAM_LIFETIME = 3600.0
CHILD_MARGIN = 30.0  # seconds a client process may take past the timeout to report
SNAPSHOT_AT = 0.8  # of the delay after the release: every call is held by then
LOG_TAIL_LINES = 30


@dataclass
class Outcome:
    """How one call ended: `200` or what went wrong, and its duration from the release."""

    status: str
    seconds: float


@dataclass
class Run:
    """One burst: where it went, its outcomes and wall time, and Tollgate's memory meanwhile."""

    target: str
    outcomes: list[Outcome]
    wall: float
    peak_kib: int = 0
    cpu_seconds: float = 0.0
    snapshot: str = ""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="1000", help="comma-separated counts of calls held at once")
    parser.add_argument("--delay", type=float, default=10.0, help="seconds the upstream takes per answer")
    parser.add_argument("--stream", action="store_true", help="streamed answers, spread over the delay")
    parser.add_argument("--databases", default="sqlite", help="comma-separated: sqlite, postgres")
    parser.add_argument("--webhooks", action="store_true", help="spend_tracked events to a local receiver")
    parser.add_argument("--users", type=int, default=100, help="customers the calls cycle over")
    parser.add_argument("--workers", type=int, default=common.DEFAULT_WORKERS, help="WEB_CONCURRENCY")
    parser.add_argument("--timeout", type=float, default=120.0, help="abandon a burst this long after its release")
    parser.add_argument("--client-processes", type=int, default=4, help="processes the client threads run in")
    parser.add_argument("--no-straight", dest="straight", action="store_false", help="skip the straight run")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="for Tollgate's gunicorn")
    args = parser.parse_args()
    args.calls = [int(count) for count in args.calls.split(",")]
    args.databases = args.databases.split(",")
    unknown = set(args.databases) - set(common.DATABASES)
    if unknown:
        parser.error(f"unknown database {', '.join(sorted(unknown))}: expected {', '.join(common.DATABASES)}")
    args.env = dict(item.split("=", 1) for item in args.env)
    return args


def raise_file_limit() -> int:
    """Raise this process's RLIMIT_NOFILE to its hard limit (children inherit it); the new limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def body(user: str, stream: bool) -> bytes:
    """One call's JSON body; a stream asks for the usage chunk, as Tollgate does of the upstream."""
    payload = common.chat_body(user)
    if stream:
        payload |= {"stream": True, "stream_options": {"include_usage": True}}
    return json.dumps(payload).encode()


def call(base_url: str, payload: bytes, stream: bool, timeout: float) -> str:
    """One POST /chat/completions on its own connection: "200" or what went wrong; never raises."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    headers = {**common.AUTH, "Content-Type": "application/json"}
    try:
        connection.request("POST", f"{parts.path}/chat/completions", body=payload, headers=headers)
        response = connection.getresponse()
        answer = response.read()  # a stream: to its last chunk
        if response.status != 200 or not stream:
            return str(response.status)
        return "200" if answer.rstrip().endswith(b"data: [DONE]") else "incomplete stream"
    except TimeoutError:
        return "timeout"
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        connection.close()


def burst(base_url: str, calls: int, args: argparse.Namespace,
          on_release: Callable[[], None] = lambda: None) -> list[Outcome]:  # fmt: skip
    """`calls` calls from `--client-processes` processes of client threads, all released together
    (then `on_release` is called here); their outcomes.

    The clients are spread over processes because thousands of threads woken at the same moment
    in one process (every answer of a burst comes back together) queue for its GIL: one process
    held 10,000 streamed calls for six times their length on its own, straight to the upstream.
    """
    context = multiprocessing.get_context("fork")
    together = context.Barrier(args.client_processes + 1, timeout=args.timeout)
    receivers, children, shares = [], [], []
    for share in range(args.client_processes):
        receiver, sender = context.Pipe(duplex=False)
        indexes = range(share, calls, args.client_processes)
        child = context.Process(target=clients, args=(sender, together, base_url, indexes, args), daemon=True)
        child.start()
        sender.close()
        receivers.append(receiver)
        children.append(child)
        shares.append(len(indexes))
    outcomes: list[Outcome] = []
    try:
        together.wait()
        on_release()
        for receiver, share in zip(receivers, shares, strict=True):
            got = receiver.recv() if receiver.poll(args.timeout + CHILD_MARGIN) else None
            outcomes.extend(got or [Outcome("timeout", args.timeout)] * share)
    finally:
        for child in children:
            child.join(CHILD_MARGIN)
            if child.is_alive():
                child.kill()  # by its pid
                child.join()
    return outcomes


def clients(sender, together, base_url: str, indexes: range, args: argparse.Namespace) -> None:
    """One client process: a thread per call of `indexes`, released together with the other
    processes' once every thread is ready; sends back the outcomes."""
    outcomes: list[Outcome | None] = [None] * len(indexes)
    released: list[float] = []
    barrier = threading.Barrier(len(indexes), action=lambda: (together.wait(), released.append(time.monotonic())))
    payloads = [body(f"bench-user-{index % args.users}", args.stream) for index in indexes]

    def run(slot: int) -> None:
        try:
            barrier.wait(args.timeout)
        except threading.BrokenBarrierError:
            outcomes[slot] = Outcome("not released", 0.0)
            return
        status = call(base_url, payloads[slot], args.stream, args.timeout)
        outcomes[slot] = Outcome(status, time.monotonic() - released[0])

    threading.stack_size(CLIENT_STACK_BYTES)
    threads = [threading.Thread(target=run, args=(slot,), daemon=True) for slot in range(len(indexes))]
    for thread in threads:
        thread.start()
    while not released and threads[-1].is_alive():
        time.sleep(0.01)
    start = released[0] if released else time.monotonic()
    for thread in threads:
        thread.join(max(0.0, start + args.timeout - time.monotonic()))
    sender.send([outcome or Outcome("timeout", args.timeout) for outcome in outcomes])
    sender.close()


def measured(target: str, base_url: str, args: argparse.Namespace, calls: int, server: Server | None = None,
             database_url: str = "") -> Run:  # fmt: skip
    """One burst against `base_url`; with a `server`, its peak RSS and a snapshot while held."""
    with ExitStack() as stack:
        peak = stack.enter_context(PeakRss(server.process.pid)) if server else None
        snapshot: list[str] = []
        watcher = threading.Timer(args.delay * SNAPSHOT_AT, lambda: snapshot.append(held(server, database_url)))
        watcher.daemon = True
        stack.callback(watcher.cancel)
        on_release = watcher.start if server else (lambda: None)
        cpu_before = tree_cpu_seconds(server.process.pid) if server else 0.0
        outcomes = burst(base_url, calls, args, on_release)
        cpu = tree_cpu_seconds(server.process.pid) - cpu_before if server else 0.0
    wall = max((outcome.seconds for outcome in outcomes), default=0.0)
    return Run(target, outcomes, wall, peak.peak_kib if peak else 0, cpu, snapshot[0] if snapshot else "")


def held(server: Server, database_url: str) -> str:
    """Each Tollgate process's RSS and threads, and the database connections open, at this moment."""
    parts = []
    for pid in common.process_tree(server.process.pid):
        parts.append(f"pid {pid}: {common.rss_kib(pid) / 1024:.0f} MiB, {threads_of(pid)} threads")
    name = common.postgres_name(database_url)
    if name:
        backends = common.backends(name)
        parts.append(f"PostgreSQL backends: {'?' if backends is None else len(backends)}")
    else:
        path = os.path.realpath(database_url.removeprefix("sqlite:///"))
        opened = sum(open_files(pid).count(path) for pid in common.process_tree(server.process.pid))
        parts.append(f"SQLite connections: {opened}")
    return "; ".join(parts)


def threads_of(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def open_files(pid: int) -> list[str]:
    """The paths of `pid`'s open file descriptors (empty when it is gone)."""
    found = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                found.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                continue
    except OSError:
        pass
    return found


@contextmanager
def tollgate(upstream: common.Upstream, database: str, args: argparse.Namespace,
             webhook_url: str | None) -> Iterator[tuple[Server, str]]:  # fmt: skip
    """The Procfile command on a fresh store of `database`, with the default budget tier created;
    (the server, its DATABASE_URL). Stopped by its pid, and its database removed, at the end."""
    with tempfile.TemporaryDirectory(prefix="tollgate-inflight-") as directory, ExitStack() as stack:
        path = Path(directory)
        settings = {"max_end_user_budget_id": TIER}
        config = common.write_config(path, upstream.url, webhooks=webhook_url is not None, litellm_settings=settings)
        env = {
            "CONFIG_FILE_PATH": str(config),
            "DATABASE_URL": stack.enter_context(common.database(database, path)),
            "LITELLM_MASTER_KEY": common.MASTER_KEY,
            **({"WEBHOOK_URL": webhook_url} if webhook_url else {}),
            **args.env,
        }
        server = stack.enter_context(tollgate_server(env, workers=args.workers))
        common.wait_for_workers(server.process.pid, args.workers)
        tier = {"budget_id": TIER, "max_budget": TIER_BUDGET}
        response = requests.post(f"{server.url}/budget/new", json=tier, headers=common.AUTH, timeout=10)
        if response.status_code != 200:
            raise RuntimeError(f"/budget/new answered {response.status_code}: {response.text}")
        warm = json.loads(body("bench-warm-up", args.stream))
        response = requests.post(f"{server.url}/chat/completions", json=warm, headers=common.AUTH, timeout=60)
        if response.status_code != 200:
            raise RuntimeError(f"the warm-up call answered {response.status_code}: {response.text[:300]}")
        yield server, env["DATABASE_URL"]


def summary(run: Run, straight: Run | None) -> str:
    """One markdown row."""
    counts = collections.Counter(outcome.status for outcome in run.outcomes)
    ok = counts.pop("200", 0)
    errors = ", ".join(f"{count} {status}" for status, count in counts.most_common()) or "0"
    seconds = [outcome.seconds for outcome in run.outcomes]
    ratio = f"{run.wall / straight.wall:.2f}" if straight and straight.wall else ""
    peak = f"{run.peak_kib / 1024:.0f}" if run.peak_kib else ""
    cpu = f"{run.cpu_seconds * 1000 / len(run.outcomes):.2f}" if run.cpu_seconds else ""
    p50, p99 = common.percentile(seconds, 50), common.percentile(seconds, 99)
    return (
        f"| {len(run.outcomes):,} | {run.target} | {ok:,} | {errors} | {run.wall:.1f} | {ratio} "
        f"| {p50:.1f} / {p99:.1f} | {peak} | {cpu} |"
    )


HEADER = (
    "| calls | through | 200 | errors | wall s | × straight | p50 / p99 s | peak RSS MiB | CPU ms/call |\n"
    "|---:|---|---:|---|---:|---:|---|---:|---:|"
)


def main() -> int:
    args = parse_args()
    limit = raise_file_limit()
    chunk_delay_ms = int(args.delay * 1000 / STREAM_EVENTS)
    upstream_flags = ("--chunks", str(STREAM_PIECES), "--chunk-delay-ms", str(chunk_delay_ms))
    delay_ms = 0 if args.stream else int(args.delay * 1000)
    mode = "streamed" if args.stream else "plain"
    print(f"{mode} calls of {args.delay:g} s; file limit {limit}; Tollgate: {args.workers} workers, env {args.env}")
    rows, failed = [], 0
    with ExitStack() as stack:
        upstream = stack.enter_context(common.fake_upstream(delay_ms, UPSTREAM_LIFETIME, *upstream_flags))
        sink = stack.enter_context(common.webhook_sink(UPSTREAM_LIFETIME)) if args.webhooks else None
        for calls in args.calls:
            straight = measured("straight", upstream.url, args, calls) if args.straight else None
            if straight:
                rows.append(summary(straight, None))
                print(rows[-1], flush=True)
            for database in args.databases:
                with tollgate(upstream, database, args, sink.url if sink else None) as (server, database_url):
                    run = measured(f"Tollgate, {database}", server.url, args, calls, server, database_url)
                    rows.append(summary(run, straight))
                    print(rows[-1], flush=True)
                    print(f"  held: {run.snapshot}", flush=True)
                    bad = sum(1 for outcome in run.outcomes if outcome.status != "200")
                    failed += bad
                    if bad:
                        print("\n".join(server.log().splitlines()[-LOG_TAIL_LINES:]))
    print(f"\n{mode}, {args.delay:g} s per call, webhooks {'on' if args.webhooks else 'off'}, env {args.env}")
    print(HEADER)
    print("\n".join(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
