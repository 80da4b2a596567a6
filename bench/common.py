"""What the benchmark scripts share: the config, the fake upstream, Tollgate, percentiles, RSS.

Everything runs on 127.0.0.1. Every process started here is stopped by its process id in a
`finally` block, so an exception or Ctrl-C leaves nothing running.
"""

from __future__ import annotations

import json
import math
import os
import select
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import requests
import yaml

from tests.servers import (
    REPO,
    Server,
    free_port,
    stop,
    tollgate_server,
)

MODEL = "bench-model"
MASTER_KEY = "sk-bench-master-key"
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
DEFAULT_WORKERS = 2  # gunicorn.conf.py's default when WEB_CONCURRENCY is unset
UPSTREAM_START_TIMEOUT = 10.0
SINK_ANSWER_TIMEOUT = 10.0
INPUT_COST_PER_TOKEN = 0.000001  # USD, the bench model's custom prices
OUTPUT_COST_PER_TOKEN = 0.000002
DATABASES = ("sqlite", "postgres")
# The PostgreSQL server the benchmarks create their throwaway databases on (trust auth, 127.0.0.1).
POSTGRES_SERVER = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
CONNECT_TRIES = 40  # a server shared with test suites may be out of connections for a moment
CONNECT_PAUSE = 0.25


@dataclass
class Upstream:
    """A running fake upstream process and its OpenAI-style base URL."""

    url: str
    root: str
    process: subprocess.Popen

    def calls(self) -> int:
        """How many completions the fake upstream has served."""
        return requests.get(f"{self.root}/stats", timeout=5).json()["calls"]


def general_settings(webhooks: bool) -> dict:
    """The config's `general_settings`: the master key, plus `alerting: ["webhook"]` when `webhooks`."""
    settings: dict = {"alerting": ["webhook"]} if webhooks else {}
    settings["master_key"] = "os.environ/LITELLM_MASTER_KEY"
    return settings


@dataclass
class Sink:
    """A running webhook sink process (`bench/sink.py`) and the URL it receives events on."""

    url: str
    process: subprocess.Popen

    def counts(self) -> tuple[int, int]:
        """(events accepted, distinct event_ids among them) so far."""
        self.process.stdin.write("count\n")
        self.process.stdin.flush()
        accepted, distinct = read_line(self.process, SINK_ANSWER_TIMEOUT).split()
        return int(accepted), int(distinct)

    def events(self, prefix: str) -> dict[str, list]:
        """The events recorded for customers whose id starts with `prefix` (a sink started with
        `record=True`): {event_id: [event, customer_id, spend as sent, arrivals, distinct bodies, message]}."""
        self.process.stdin.write(f"events {prefix}\n")
        self.process.stdin.flush()
        return json.loads(read_line(self.process, SINK_ANSWER_TIMEOUT))

    def wait_for(self, count: int, timeout: float) -> tuple[int, int]:
        """The counts once at least `count` events were accepted, or when `timeout` seconds passed."""
        deadline = time.monotonic() + timeout
        while (found := self.counts())[0] < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return found


def read_line(process: subprocess.Popen, timeout: float) -> str:
    """One line of `process`'s stdout, waiting at most `timeout` seconds for it."""
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else ""
    if not line:
        raise RuntimeError(f"webhook sink gave no answer within {timeout}s (exit code {process.poll()})")
    return line.strip()


@contextmanager
def webhook_sink(seconds: float, nice: int = 19, record: bool = False) -> Iterator[Sink]:
    """Run the benchmark's webhook receiver in its own process (`bench/sink.py`, at CPU priority
    `nice`, keeping every event's arrivals with `record`); stop it by pid."""
    command = [sys.executable, "-m", "bench.sink", "--seconds", str(seconds), "--nice", str(nice)]
    command += ["--record"] if record else []
    process = subprocess.Popen(
        command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        yield Sink(url=read_line(process, SINK_ANSWER_TIMEOUT), process=process)
    finally:
        with suppress(OSError):
            process.stdin.close()
        stop(process)
        process.stdout.close()


def write_config(
    directory: Path, upstream_url: str, webhooks: bool = False, litellm_settings: dict | None = None
) -> Path:
    """Write a config.yaml with the single model `bench-model` served by `upstream_url`.

    With `webhooks`, `general_settings.alerting` is `["webhook"]`: every charged call then writes
    a `spend_tracked` event to the outbox (sent to `WEBHOOK_URL`). `litellm_settings`, when
    given, is written as the config's `litellm_settings` (e.g. `{"budget_enforcement": "strict"}`).
    """
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": upstream_url,
                    "api_key": "none",
                    "input_cost_per_token": INPUT_COST_PER_TOKEN,
                    "output_cost_per_token": OUTPUT_COST_PER_TOKEN,
                },
            }
        ],
        "general_settings": general_settings(webhooks),
    }
    if litellm_settings:
        config["litellm_settings"] = litellm_settings
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    """A `DATABASE_URL` of a new, empty database of `kind` (`sqlite` or `postgres`), removed afterwards.

    sqlite: a file in `folder`. postgres: `CREATE DATABASE bench_<random>` on POSTGRES_SERVER,
    dropped at the end (`DROP DATABASE … WITH (FORCE)`, which also ends any session left on it).
    """
    if kind == "sqlite":
        yield f"sqlite:///{folder / f'{uuid.uuid4().hex}.db'}"
        return
    if kind != "postgres":
        raise ValueError(f"unknown database {kind!r}: expected one of {', '.join(DATABASES)}")
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with connect(POSTGRES_SERVER) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        server = urlsplit(POSTGRES_SERVER)
        yield urlunsplit((server.scheme, server.netloc, f"/{name}", server.query, server.fragment))
    finally:
        try:
            with connect(POSTGRES_SERVER) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.OperationalError as exc:
            print(f"could not drop database {name} (drop it by hand): {exc}", file=sys.stderr)


def connect(url: str) -> psycopg.Connection:
    """An autocommit connection to `url`, tried CONNECT_TRIES times CONNECT_PAUSE apart while the
    server answers that it is out of connections (the test suites share it)."""
    for attempt in range(CONNECT_TRIES):
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as exc:
            if "too many clients" not in str(exc) or attempt == CONNECT_TRIES - 1:
                raise
            time.sleep(CONNECT_PAUSE)
    raise AssertionError("unreachable")


def postgres_name(database_url: str) -> str | None:
    """The database name of a PostgreSQL URL (None for a SQLite one)."""
    if not database_url.startswith(("postgres://", "postgresql://")):
        return None
    return urlsplit(database_url).path.lstrip("/") or None


def backends(name: str) -> list[int] | None:
    """The pids of the PostgreSQL server's backends connected to database `name` (pg_stat_activity),
    asked over a connection to POSTGRES_SERVER's own database, so the asking one is not among them;
    None when the server could not be asked."""
    try:
        with connect(POSTGRES_SERVER) as admin:
            rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,)).fetchall()
    except psycopg.OperationalError:
        return None
    return [pid for (pid,) in rows]


def chat_body(user: str) -> dict:
    """The body of one benchmark chat completion."""
    return {"model": MODEL, "user": user, "messages": [{"role": "user", "content": "hi"}]}


@contextmanager
def fake_upstream(delay_ms: int, seconds: float, *extra: str) -> Iterator[Upstream]:
    """Run `tests/fake_upstream.py` as its own process; yield once `GET /stats` answers.

    `extra` are more of its flags, such as `--chunk-delay-ms 1000` for slow streams.
    """
    port = free_port()
    command = [
        sys.executable,
        str(REPO / "tests" / "fake_upstream.py"),
        "--port",
        str(port),
        "--delay-ms",
        str(delay_ms),
        "--seconds",
        str(seconds),
        *extra,
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, start_new_session=True)
    root = f"http://127.0.0.1:{port}"
    upstream = Upstream(url=f"{root}/v1", root=root, process=process)
    try:
        wait_for_upstream(upstream)
        yield upstream
    finally:
        stop(process)


def wait_for_upstream(upstream: Upstream) -> None:
    """Poll `GET /stats` until it answers, for at most UPSTREAM_START_TIMEOUT seconds."""
    deadline = time.monotonic() + UPSTREAM_START_TIMEOUT
    while time.monotonic() < deadline:
        if upstream.process.poll() is not None:
            raise RuntimeError(f"fake upstream exited with {upstream.process.returncode}")
        try:
            upstream.calls()
            return
        except requests.RequestException:
            time.sleep(0.05)
    raise RuntimeError(f"fake upstream did not answer within {UPSTREAM_START_TIMEOUT}s")


@contextmanager
def tollgate(upstream: Upstream, workers: int, webhook_url: str | None = None) -> Iterator[Server]:
    """Run Tollgate (the Procfile command) in front of `upstream`, on a fresh SQLite file.

    With a `webhook_url`, webhooks are on: `alerting: ["webhook"]` and `WEBHOOK_URL` set.
    """
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-") as directory:
        path = Path(directory)
        env = {
            "CONFIG_FILE_PATH": str(write_config(path, upstream.url, webhooks=webhook_url is not None)),
            "DATABASE_URL": f"sqlite:///{path / 'tollgate.db'}",
            "LITELLM_MASTER_KEY": MASTER_KEY,
        }
        if webhook_url is not None:
            env["WEBHOOK_URL"] = webhook_url
        with tollgate_server(env, workers=workers) as server:
            wait_for_workers(server.process.pid, workers)
            yield server


def wait_for_workers(pid: int, workers: int, timeout: float = 30.0) -> None:
    """Wait until the gunicorn master `pid` has `workers` children, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while len(children(pid)) < workers:
        if time.monotonic() >= deadline:
            raise RuntimeError(f"gunicorn did not start {workers} workers within {timeout}s")
        time.sleep(0.05)


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) of `values`, interpolating between the closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, read from /proc/<pid>/task/*/children."""
    found = [pid]
    index = 0
    while index < len(found):
        found.extend(children(found[index]))
        index += 1
    return found


def children(pid: int) -> list[int]:
    """The direct children of `pid` (empty when it is gone)."""
    result = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            result.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
    return result


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss(pid: int) -> dict[int, int]:
    """VmRSS in KiB of `pid` and each of its descendants."""
    return {member: rss_kib(member) for member in process_tree(pid)}


def format_rss(rss: dict[int, int]) -> str:
    """One line: the total in MiB and the share of each process."""
    parts = ", ".join(f"pid {pid} {kib / 1024:.1f}" for pid, kib in rss.items())
    return f"{sum(rss.values()) / 1024:.1f} MiB ({parts})"
