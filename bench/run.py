"""The full benchmark harness, one command: `python -m bench.run`.

It starts the fast local fake upstream (answers at once; streams of `--chunks` chunks with no
delay) and Tollgate with the Procfile's `web:` command (real gunicorn, gunicorn.conf.py's default
2 workers x 512 threads, a fresh SQLite store), and drives load with wrk (`bench/post.lua`:
JSON POSTs to /chat/completions with the master key, `user` cycling over `--users` customers).
With `--budget` (on by default) those customers are first created with `max_budget` 1000000, so
every call does budget admission (reservation and settlement) as in production.

It first prints the time from starting the Procfile command to the first call served 200
(polled every 10 ms, at most 30 s). Then, for each mode (non-streaming, streaming) and each
concurrency level (wrk `-c N -t min(N,2) -d --duration`), it measures the upstream DIRECTLY and
THROUGH Tollgate: requests/s, p50/p90/p99 latency, errors (non-2xx and socket errors), and for
Tollgate the CPU seconds of its process tree (utime+stime of the master and workers, children
reaped included), the busiest worker's share of the workers' CPU (wrk's connections are spread
over the workers by whichever accepts first: ~50% is even, ~100% means one worker served them
all), the webhook delivery threads' share of the workers' CPU (the threads named
`thread_names.DELIVERY`, read from /proc/<worker>/task/*/stat), its peak RSS (sampled every
0.25 s), and with webhooks on the CPU the local webhook receiver (`bench/sink.py`, which shares
the cores here where a real receiver has its own) used per call meanwhile. One markdown table at
the end. Before
each mode an unmeasured `--warmup` seconds of load at 8 clients goes through Tollgate.

    python -m bench.run [--duration 10] [--concurrency 1,8,32,256] [--no-streaming] [--webhooks]
    python -m bench.run --databases sqlite,postgres [--webhooks] [--concurrency 1,8,32] [--no-streaming]
    python -m bench.run --compare-webhooks [--rounds 3] [--think-ms 2] [--concurrency 1,8]

`--databases` (default `sqlite`) names the stores Tollgate runs on: `sqlite` (a fresh file) and
`postgres` (a throwaway database `bench_<random>` created on the PostgreSQL server of
`BENCH_POSTGRES`, default postgresql://postgres@127.0.0.1:5432/postgres, and dropped at the end).
With more than one, a Tollgate runs on each at once and the points alternate between them: per
level the upstream directly, then each database in turn (with webhooks on, each database's
events are delivered before the next one is measured), so a drift of the machine falls on all
of them alike; one table, with a `database` column and, for PostgreSQL, the CPU per call of the
server's backends connected to its database (pg_stat_activity, read from /proc; the server's
shared processes such as the WAL writer are not counted).

`--think-ms N` paces the load: each client waits N ms after an answer before its next call
(`bench/paced.lua`), so the machine is not saturated and the latency is that of calls arriving at
a steady rate; without it each client sends its next call at once (a closed loop).

`--compare-webhooks` answers "do webhooks slow the calls?": for `--rounds` rounds it starts a
fresh Tollgate with webhooks off and another with webhooks on (ABBA order: off, on, then on, off,
...), measures each at every level (non-streaming), and prints every point, then per level the
median and range over the rounds of requests/s, p50 and p99 for each, the difference of the
medians next to the spread of the webhooks-off runs (a difference smaller than that spread is
not measurable on this machine), and the differences paired by round with how many rounds had
the higher figure with webhooks on (a drift of the machine over the run moves both runs of a
round alike). The events of each warm-up are delivered before its Tollgate
is measured.

Everything runs on 127.0.0.1, every run is bounded in time, and every process started is stopped
by its pid. Exits 2 when wrk is missing, 1 when any call failed.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

import thread_names
from bench import common, wrk
from tests.servers import Server, free_port, procfile_command, stop

USER_PREFIX = "bench-user-"
MAX_BUDGET = 1000000
FIRST_CALL_TIMEOUT = 30.0
FIRST_CALL_POLL = 0.01
SAMPLE_SECONDS = 0.25
WARMUP_CLIENTS = 8
DRAIN_SECONDS = 10.0
EXCERPT_LINES = 30
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MODES = {False: "json", True: "stream"}
COMPARED = {False: "tollgate, webhooks off", True: "tollgate, webhooks on"}


@dataclass
class Point:
    """One measured point: a mode, a client count, a target and what wrk and /proc said."""

    mode: str
    clients: int
    target: str
    result: wrk.Result
    cpu_seconds: float | None = None
    peak_rss_kib: int | None = None
    busiest_worker: float | None = None  # the busiest worker's share of the workers' CPU, 0-1
    delivery: float | None = None  # the webhook delivery threads' share of the workers' CPU, 0-1
    receiver_cpu: float | None = None  # CPU seconds the webhook receiver (bench/sink.py) used meanwhile
    database: str = ""  # the store of the Tollgate measured (sqlite or postgres); "" for direct
    database_cpu: float | None = None  # CPU seconds of the PostgreSQL server processes serving its database


def parse_args() -> argparse.Namespace:
    """The command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per point (default 10)")
    parser.add_argument("--concurrency", default="1,8,32,256", help="client counts (default 1,8,32,256)")
    parser.add_argument(
        "--streaming", action=argparse.BooleanOptionalAction, default=True, help="also measure streamed calls"
    )
    parser.add_argument("--webhooks", action="store_true", help="webhooks on, to a local sink (bench/sink.py)")
    parser.add_argument(
        "--compare-webhooks", action="store_true", help="rounds of Tollgate with webhooks off and on, compared"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --compare-webhooks (default 3)")
    parser.add_argument(
        "--budget", action=argparse.BooleanOptionalAction, default=True, help="create the customers with a budget"
    )
    parser.add_argument("--users", type=int, default=100, help="customers the calls cycle over (default 100)")
    parser.add_argument("--chunks", type=int, default=5, help="content chunks of a streamed answer (default 5)")
    parser.add_argument(
        "--think-ms", type=int, default=0, help="each client waits this long between calls (default 0: closed loop)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured seconds before each mode (default 2)")
    parser.add_argument("--workers", type=int, default=common.DEFAULT_WORKERS, help="gunicorn workers (default 2)")
    parser.add_argument(
        "--databases", default="sqlite", help="stores Tollgate runs on, side by side: sqlite,postgres (default sqlite)"
    )
    args = parser.parse_args()
    args.databases = [name.strip() for name in args.databases.split(",") if name.strip()]
    unknown = [name for name in args.databases if name not in common.DATABASES]
    if unknown or not args.databases or len(set(args.databases)) != len(args.databases):
        parser.error(f"--databases: a list of distinct names among {', '.join(common.DATABASES)}")
    if args.compare_webhooks and len(args.databases) > 1:
        parser.error("--compare-webhooks runs on one database at a time")
    args.levels = [int(level) for level in args.concurrency.split(",") if level.strip()]
    args.modes = [False, True] if args.streaming and not args.compare_webhooks else [False]
    instances = 2 * args.rounds if args.compare_webhooks else 1
    per_point = args.duration + wrk.EXIT_MARGIN + 2
    databases = len(args.databases)
    points = len(args.levels) * len(args.modes) * (instances * databases + 1)
    args.lifetime = (
        points * (per_point + DRAIN_SECONDS)
        + instances * databases * len(args.modes) * (args.warmup + wrk.EXIT_MARGIN + 60)
        + 300
    )
    args.webhooks = args.webhooks or args.compare_webhooks  # the sink is needed
    return args


def cpu_ticks(pid: int, stat: str | None = None) -> int:
    """utime+stime+cutime+cstime of one process in clock ticks (0 when it is gone), from its
    /proc stat file or `stat`, a thread's (`/proc/<pid>/task/<tid>/stat`, where the last two are 0)."""
    try:
        text = Path(stat or f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = text.rsplit(")", 1)[1].split()  # fields[0] is field 3 (state); utime is field 14
    return sum(int(value) for value in fields[11:15])


def worker_cpu_ticks(pid: int) -> dict[int, int]:
    """CPU ticks used so far by each child (gunicorn worker) of `pid`."""
    return {child: cpu_ticks(child) for child in common.children(pid)}


def busiest_share(before: dict[int, int], after: dict[int, int]) -> float | None:
    """The busiest worker's share of the CPU the workers used between two readings."""
    used = [ticks - before.get(worker, 0) for worker, ticks in after.items()]
    return max(used) / sum(used) if sum(used) > 0 else None


def delivery_ticks(pid: int) -> int:
    """CPU ticks used so far by the webhook delivery threads of the children (workers) of `pid`,
    found by the name they give themselves at the OS level (`thread_names.DELIVERY`)."""
    total = 0
    for worker in common.children(pid):
        for task in Path(f"/proc/{worker}/task").glob("*"):
            try:
                if (task / "comm").read_text().strip() != thread_names.DELIVERY:
                    continue
            except OSError:
                continue  # the thread or the worker is gone
            total += cpu_ticks(worker, str(task / "stat"))
    return total


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by `pid` and its descendants, the ones already reaped included."""
    return sum(cpu_ticks(member) for member in common.process_tree(pid)) / CLOCK_TICKS


class PeakRss:
    """Samples the RSS of a process tree every SAMPLE_SECONDS while in the `with` block."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak_kib = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        """Keep the largest total seen: one sample at once, then one every SAMPLE_SECONDS."""
        while True:
            self.peak_kib = max(self.peak_kib, sum(common.tree_rss(self.pid).values()))
            if self._done.wait(SAMPLE_SECONDS):
                return


@contextmanager
def started_tollgate(
    upstream: common.Upstream, workers: int, webhook_url: str | None, database: str = "sqlite"
) -> Iterator[tuple[Server, float, str]]:
    """Run the Procfile command on a fresh store of `database` (`sqlite` or `postgres`); stop it
    by pid at the end (and drop the PostgreSQL database).

    Yields the server, the seconds from starting the command to its first 200 from
    /chat/completions, once all its workers are up, and its DATABASE_URL.
    """
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-") as directory, ExitStack() as stack:
        path = Path(directory)
        port = free_port()
        env = {
            **os.environ,
            "PORT": str(port),
            "WEB_CONCURRENCY": str(workers),
            "CONFIG_FILE_PATH": str(common.write_config(path, upstream.url, webhooks=webhook_url is not None)),
            "DATABASE_URL": stack.enter_context(common.database(database, path)),
            "LITELLM_MASTER_KEY": common.MASTER_KEY,
        }
        if webhook_url is not None:
            env["WEBHOOK_URL"] = webhook_url
        log_path = path / "tollgate.log"
        with log_path.open("wb") as log_file:
            started = time.monotonic()
            process = subprocess.Popen(
                procfile_command(), cwd=common.REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            server = Server(f"http://127.0.0.1:{port}", process, log_path)
            try:
                seconds = first_call(server, started)
                common.wait_for_workers(process.pid, workers)
                yield server, seconds, env["DATABASE_URL"]
            finally:
                stop(process)


def first_call(server: Server, started: float) -> float:
    """Seconds from `started` to the first 200 from /chat/completions, polled every 10 ms, at most 30 s."""
    url = f"{server.url}/chat/completions"
    body = common.chat_body("first-call")
    deadline = started + FIRST_CALL_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"tollgate exited with {server.process.returncode}:\n{server.log()}")
        try:
            left = max(deadline - time.monotonic(), 0.01)
            if requests.post(url, json=body, headers=common.AUTH, timeout=left).status_code == 200:
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(FIRST_CALL_POLL)
    raise RuntimeError(f"no call served within {FIRST_CALL_TIMEOUT}s:\n{server.log()}")


def create_customers(server: Server, users: int) -> None:
    """POST /customer/new for every benchmark customer, with max_budget MAX_BUDGET."""
    with requests.Session() as session:
        for number in range(users):
            body = {"user_id": f"{USER_PREFIX}{number}", "max_budget": MAX_BUDGET}
            response = session.post(f"{server.url}/customer/new", json=body, headers=common.AUTH, timeout=10)
            if response.status_code != 200:
                raise RuntimeError(f"/customer/new answered {response.status_code}: {response.text}")


def measure_tollgate(
    binary: str,
    server: Server,
    clients: int,
    seconds: int,
    load: wrk.Load,
    receiver: int | None = None,
    database_url: str | None = None,
) -> Point:
    """One point through Tollgate, with the CPU and peak RSS of its process tree, the CPU of the
    webhook receiver's process `receiver` meanwhile (it shares the cores with Tollgate here), and
    on PostgreSQL the CPU of the server's processes serving `database_url`."""
    pid = server.process.pid
    before, workers, delivering = tree_cpu_seconds(pid), worker_cpu_ticks(pid), delivery_ticks(pid)
    receiving = cpu_ticks(receiver) if receiver else 0
    backends = BackendCpu(database_url)
    with PeakRss(pid) as rss:
        result = wrk.run(binary, f"{server.url}/chat/completions", clients, seconds, load)
    cpu, after = tree_cpu_seconds(pid) - before, worker_cpu_ticks(pid)
    received = (cpu_ticks(receiver) - receiving) / CLOCK_TICKS if receiver else None
    used = sum(ticks - workers.get(worker, 0) for worker, ticks in after.items())
    delivery = (delivery_ticks(pid) - delivering) / used if used > 0 else None
    busiest = busiest_share(workers, after)
    point = Point(MODES[load.stream], clients, "tollgate", result, cpu, rss.peak_kib, busiest, delivery, received)
    point.database_cpu = backends.seconds()
    return point


class BackendCpu:
    """CPU used by the PostgreSQL backends connected to one database, from when it is made to
    `seconds()`: the backends found at either end (pg_stat_activity), read from /proc. A backend
    that ends in between loses its share; the server's shared processes (WAL writer,
    checkpointer) are not counted. Nothing for a SQLite URL (None)."""

    def __init__(self, database_url: str | None):
        self.name = common.postgres_name(database_url) if database_url else None
        self.ticks = self._read() if self.name else None

    def _read(self) -> dict[int, int] | None:
        found = common.backends(self.name)
        return None if found is None else {backend: cpu_ticks(backend) for backend in found}

    def seconds(self) -> float | None:
        """CPU seconds since it was made; None on SQLite or when the server could not be asked."""
        if self.ticks is None:
            return None
        now = self._read()
        if now is None:
            return None
        return sum(ticks - self.ticks.get(backend, 0) for backend, ticks in now.items()) / CLOCK_TICKS


def run_points(
    binary: str,
    upstream: common.Upstream,
    servers: dict[str, tuple[Server, str]],
    args: argparse.Namespace,
    sink: common.Sink | None = None,
) -> list[Point]:
    """For each mode and level: DIRECT to the upstream, then THROUGH each Tollgate of `servers`
    (database: (server, its DATABASE_URL)) in turn. With several, each one's events are delivered before the next
    is measured, so no Tollgate's deliveries fall into another's point."""
    points: list[Point] = []
    receiver = sink.process.pid if sink else None
    side_by_side = len(servers) > 1
    for stream in args.modes:
        load = wrk.Load(common.MASTER_KEY, args.users, USER_PREFIX, common.MODEL, stream, args.think_ms)
        if args.warmup:
            print(f"warm-up {MODES[stream]}: {args.warmup} s at {WARMUP_CLIENTS} clients", flush=True)
            for server, _ in servers.values():
                wrk.run(binary, f"{server.url}/chat/completions", WARMUP_CLIENTS, args.warmup, load)
            if sink and side_by_side:
                drain_sink(sink)
        for clients in args.levels:
            print(f"{MODES[stream]} x{clients}: direct, then tollgate, {args.duration} s each", flush=True)
            direct = wrk.run(binary, f"{upstream.url}/chat/completions", clients, args.duration, load)
            points.append(Point(MODES[stream], clients, "direct", direct))
            for database, (server, url) in servers.items():
                before = sink.counts()[0] if sink and side_by_side else 0
                points.append(measure_tollgate(binary, server, clients, args.duration, load, receiver, url))
                points[-1].database = database
                print(f"  {row(points[-1], direct, side_by_side)}", flush=True)
                if sink and side_by_side:
                    result = points[-1].result
                    drain_sink(sink, before + result.requests - result.non2xx)
    return points


def row(point: Point, direct: wrk.Result | None, with_database: bool = False) -> str:
    """One markdown table row; Tollgate rows add latency over `direct`, CPU and peak RSS; the
    database first `with_database`."""
    result = point.result
    added = ["", "", ""]
    if point.target != "direct" and direct is not None:
        pairs = [(result.p50_ms, direct.p50_ms), (result.p90_ms, direct.p90_ms), (result.p99_ms, direct.p99_ms)]
        added = [f"{through - base:+.2f}" for through, base in pairs]
    cpu = rss = per_call = busiest = delivery = receiver = ""
    if point.cpu_seconds is not None:
        cpu = f"{point.cpu_seconds:.2f}"
        per_call = f"{point.cpu_seconds * 1000 / result.requests:.2f}" if result.requests else ""
        rss = f"{point.peak_rss_kib / 1024:.1f}"
    if point.busiest_worker is not None:
        busiest = f"{point.busiest_worker * 100:.0f}"
    if point.delivery is not None:
        delivery = f"{point.delivery * 100:.1f}"
    if point.receiver_cpu is not None and result.requests:
        receiver = f"{point.receiver_cpu * 1e6 / result.requests:.1f}"
    cells = [
        point.mode, point.clients, point.target, result.requests, f"{result.rate():.0f}", f"{result.p50_ms:.2f}",
        f"{result.p90_ms:.2f}", f"{result.p99_ms:.2f}", *added, result.error_text(), cpu, per_call, busiest, delivery,
        receiver, rss,
    ]  # fmt: skip
    if with_database:
        database = point.database_cpu
        cells = [point.database, *cells]
        cells.append(f"{database * 1000 / result.requests:.2f}" if database is not None and result.requests else "")
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def table(points: list[Point], with_database: bool = False) -> str:
    """The markdown table of every point (with a first column `database` when `with_database`)."""
    lines = [
        "| mode | clients | target | requests | req/s | p50 ms | p90 ms | p99 ms | added p50 ms | added p90 ms "
        "| added p99 ms | errors | CPU s | CPU ms/call | busiest worker % | delivery CPU % | receiver CPU µs/call "
        "| peak RSS MiB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    if with_database:
        lines = ["| database " + lines[0] + " PostgreSQL CPU ms/call |", "|---" + lines[1] + "---:|"]
    direct = {(p.mode, p.clients): p.result for p in points if p.target == "direct"}
    lines += [row(point, direct.get((point.mode, point.clients)), with_database) for point in points]
    return "\n".join(lines)


def compare_webhooks(binary: str, upstream: common.Upstream, sink: common.Sink, args: argparse.Namespace) -> int:
    """Rounds of a fresh Tollgate with webhooks off and one with them on, in ABBA order; prints
    every point and the comparison, returns the exit status."""
    load = wrk.Load(common.MASTER_KEY, args.users, USER_PREFIX, common.MODEL, False, args.think_ms)
    points = []
    for clients in args.levels:
        print(f"direct x{clients}: {args.duration} s", flush=True)
        result = wrk.run(binary, f"{upstream.url}/chat/completions", clients, args.duration, load)
        points.append(Point("json", clients, "direct", result))
    direct = {point.clients: point.result for point in points}
    problems = []
    for number in range(args.rounds):
        for webhooks in (False, True) if number % 2 == 0 else (True, False):
            webhook_url = sink.url if webhooks else None
            with started_tollgate(upstream, args.workers, webhook_url, args.databases[0]) as (server, _, url):
                if args.budget:
                    create_customers(server, args.users)
                if args.warmup:
                    wrk.run(binary, f"{server.url}/chat/completions", WARMUP_CLIENTS, args.warmup, load)
                    drain_sink(sink)  # the warm-up's events are delivered before the measuring starts
                for clients in args.levels:
                    point = measure_tollgate(binary, server, clients, args.duration, load, sink.process.pid, url)
                    point.target = COMPARED[webhooks]
                    points.append(point)
                    print(f"round {number + 1}: {row(point, direct[clients])}", flush=True)
                problems += log_excerpt(server.log())[1:]
    delivery = drain_sink(sink)
    pacing = f"each client waits {args.think_ms} ms between calls" if args.think_ms else "closed loop"
    print(f"\n{args.rounds} rounds, {args.duration} s per point, {pacing}, {args.users} customers", end="")
    print(f", {args.workers} workers\n")
    print(table(points))
    print()
    print(comparison(points, args.levels))
    print(f"\n{delivery}")
    for line in problems[:EXCERPT_LINES]:
        print(line)
    return 1 if any(point.result.errors() for point in points) else 0


def comparison(points: list[Point], levels: list[int]) -> str:
    """Per level: median (range) over the rounds of req/s, p50, p99, CPU per call, the busiest
    worker's share, the delivery threads' share and the receiver's CPU per call with webhooks off
    and on; the difference of the medians next to the spread (max - min) of the off runs; and the
    differences paired by round (the off and on runs of a round follow each other, so a drift of
    the machine falls mostly outside the pair): their median, and in how many rounds on was higher."""
    figures = {
        "req/s": lambda point: point.result.rate(),
        "p50 ms": lambda point: point.result.p50_ms,
        "p99 ms": lambda point: point.result.p99_ms,
        "CPU ms/call": lambda point: point.cpu_seconds * 1000 / max(point.result.requests, 1),
        "busiest worker %": lambda point: (point.busiest_worker or 0.0) * 100,
        "delivery CPU %": lambda point: (point.delivery or 0.0) * 100,
        "receiver CPU µs/call": lambda point: (point.receiver_cpu or 0.0) * 1e6 / max(point.result.requests, 1),
    }
    lines = [
        "| clients | webhooks | " + " | ".join(figures) + " |",
        "|---:|---|" + "---:|" * len(figures),
    ]
    for clients in levels:
        runs = {
            webhooks: [point for point in points if point.clients == clients and point.target == COMPARED[webhooks]]
            for webhooks in (False, True)
        }
        values = {
            webhooks: {name: [get(point) for point in runs[webhooks]] for name, get in figures.items()}
            for webhooks in runs
        }
        for webhooks in (False, True):
            cells = [f"{statistics.median(v):.2f} ({min(v):.2f}–{max(v):.2f})" for v in values[webhooks].values()]
            lines.append(f"| {clients} | {'on' if webhooks else 'off'} | " + " | ".join(cells) + " |")
        difference = [
            f"{statistics.median(values[True][name]) - statistics.median(values[False][name]):+.2f}" for name in figures
        ]
        spread = [f"{max(values[False][name]) - min(values[False][name]):.2f}" for name in figures]
        paired = []
        for name in figures:
            pairs = [on - off for off, on in zip(values[False][name], values[True][name], strict=False)]
            paired.append(f"{statistics.median(pairs):+.2f} ({sum(pair > 0 for pair in pairs)}/{len(pairs)} higher)")
        lines.append(f"| {clients} | on − off (medians) | " + " | ".join(difference) + " |")
        lines.append(f"| {clients} | spread of off runs | " + " | ".join(spread) + " |")
        lines.append(f"| {clients} | on − off, paired by round | " + " | ".join(paired) + " |")
    return "\n".join(lines)


def log_excerpt(log: str) -> list[str]:
    """A count of the Tollgate log's call lines by status, then its first non-200 calls, warnings and errors."""
    statuses = Counter(re.findall(r"^.* call request_id=.* status=(\S+) ", log, flags=re.MULTILINE))
    lines = [f"call log lines by status: {dict(statuses)}"]
    wanted = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback|status=(?!200 )")
    lines += [line for line in log.splitlines() if wanted.search(line)][:EXCERPT_LINES]
    return lines


def drain_sink(sink: common.Sink, at_least: int = 0) -> str:
    """The sink's counts once it has accepted `at_least` events and they stop growing for 1 s
    (at most DRAIN_SECONDS in all)."""
    deadline = time.monotonic() + DRAIN_SECONDS
    last = sink.wait_for(at_least, DRAIN_SECONDS)
    while time.monotonic() < deadline:
        time.sleep(1)
        now = sink.counts()
        if now == last:
            break
        last = now
    return f"webhook events accepted by the sink: {last[0]} ({last[1]} distinct event_id)"


def machine(binary: str) -> str:
    """nproc, the Python version and wrk's version line."""
    version = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10, check=False)
    first = (version.stdout or version.stderr).splitlines()[0].split(" Copyright")[0]
    return f"nproc {len(os.sched_getaffinity(0))}, Python {sys.version.split()[0]}, {first}"


def on(database: str, args: argparse.Namespace) -> str:
    """` on <database>`, unless the run is on the default SQLite alone."""
    return "" if args.databases == ["sqlite"] else f" on {database}"


def main() -> int:
    """Start everything, measure every point, print the table; return the exit status."""
    args = parse_args()
    binary = wrk.find_or_say()
    if binary is None:
        return 2
    print(f"machine: {machine(binary)}")
    with ExitStack() as stack:
        extra = ("--chunks", str(args.chunks), "--chunk-delay-ms", "0")
        upstream = stack.enter_context(common.fake_upstream(0, args.lifetime, *extra))
        sink = stack.enter_context(common.webhook_sink(args.lifetime)) if args.webhooks else None
        if args.compare_webhooks:
            return compare_webhooks(binary, upstream, sink, args)
        servers, firsts = {}, {}
        for database in args.databases:
            started = started_tollgate(upstream, args.workers, sink.url if sink else None, database)
            server, firsts[database], url = stack.enter_context(started)
            servers[database] = (server, url)
            print(f"start to first served call{on(database, args)}: {firsts[database]:.2f} s", flush=True)
            if args.budget:
                create_customers(server, args.users)
        points = run_points(binary, upstream, servers, args, sink)
        delivery = drain_sink(sink) if sink else None
        excerpts = {database: log_excerpt(server.log()) for database, (server, _) in servers.items()}
    settings = f"budget {'on' if args.budget else 'off'}, webhooks {'on' if args.webhooks else 'off'}"
    print(f"\n{args.duration} s per point, {args.users} customers, {settings}, {args.workers} workers\n")
    print(table(points, with_database=args.databases != ["sqlite"]))
    print()
    for database, first in firsts.items():
        print(f"start to first served call{on(database, args)}: {first:.2f} s")
    for line in [delivery] if delivery else []:
        print(line)
    for database, excerpt in excerpts.items():
        for line in excerpt:
            print(f"{database}: {line}" if len(excerpts) > 1 else line)
    return 1 if any(point.result.errors() for point in points) else 0


if __name__ == "__main__":
    sys.exit(main())
