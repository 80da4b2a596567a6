"""Calls through a Tollgate that is being hurt, and what they cost: `python -m bench.chaos` (as root).

It mounts a small tmpfs of its own (`--tmpfs-mb`, default 256; unmounted at the end, whatever
happens) for the SQLite database, starts the fake upstream with faults (`--error-rate` of the
calls answer 500 or 429, `--cut-rate` are cut mid-answer or mid-stream, `--slow-rate` wait
0.5-2 s more), the recording webhook sink (`bench/sink.py --record`) and Tollgate under its
Procfile command (`--workers` gunicorn workers, webhooks on, header and body deadlines at their
defaults). `--customers` customers are created, `--limited` of them with a budget of
`--budget-calls` calls, which runs out mid-run. Then `--calls` calls (every other one streamed,
customers in turn) go out from `--clients` client threads, paced over about `--duration`
seconds, while, at set points of the run's progress:

- a gunicorn worker is SIGKILLed `--kills` times (spread evenly from 20% to 90%);
- the tmpfs is filled to ENOSPC, held `--disk-full-seconds`, and freed (at 35%);
- `--stalls` stalled uploads (half the headers, or the headers and half the body) are opened
  together and held until each is answered or closed (at 58%; `bench/stalls.py`);
- `--hostile` malformed or hostile requests go out, spread over the run (`bench/hostile.py`).

Once the calls are done and the outbox has drained (at most `--drain-seconds`), it reads the
database (read-only) and the sink and prints the five figures, each of which must be 0:
money lost (cost of calls answered complete, a plain 200 or a stream that ended with
`[DONE]`, with no success spend-log row), money charged twice (a request id charged more than
once, plus |account spend - spend-log sum| per customer), complete streams unbilled, webhook
events lost (success rows whose `spend_tracked` event never reached the sink: a call's event
id ends with the SHA-256 of its request id), and 5xx answers to bad input. It exits 1 if any is
not 0. Everything runs on 127.0.0.1; every process started is stopped by its pid.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from pathlib import Path

import requests

import plain_json
from bench import common, hostile, stalls
from bench.chaos_results import (
    MAX_TOKENS,
    Outcome,
    Record,
    budget_use,
    compute,
    drain,
    log_summary,
    near_kill,
    read_database,
    report,
    reservations_left,
)
from bench.scaleout import call_units
from spend.money import UNITS_PER_USD, to_units, usd
from tests.servers import tollgate_server

CALL_TIMEOUT = (10.0, 120.0)  # connect, read
KILLS_FROM, KILLS_TO = 0.2, 0.9  # the kills are spread evenly between these points of the run
DISK_FULL_AT = 0.35
STALLS_AT = 0.58  # between the default three kills (0.2, 0.55, 0.9), so that they meet no kill
HOSTILE_FROM, HOSTILE_TO = 0.05, 0.95
UNLIMITED_BUDGET = 1000000  # USD


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--calls", type=int, default=2000, help="calls in all, half streamed (default 2000)")
    add("--clients", type=int, default=64, help="client threads (default 64)")
    add("--duration", type=float, default=120.0, help="seconds the calls are paced over (default 120)")
    add("--customers", type=int, default=8, help="customers the calls go to in turn (default 8)")
    add("--limited", type=int, default=2, help="customers of those with a small budget (default 2)")
    add("--budget-calls", type=int, default=100, help="the small budget, in calls (default 100)")
    add("--kills", type=int, default=3, help="worker SIGKILLs (default 3)")
    add("--disk-full-seconds", type=float, default=3.0, help="how long the disk stays full (default 3; 0: never)")
    add("--stalls", type=int, default=1300, help="stalled uploads held at once (default 1300)")
    add("--stall-hold", type=float, default=90.0, help="seconds a stalled upload is waited on at most (default 90)")
    add("--hostile", type=int, default=300, help="malformed or hostile requests (default 300)")
    add("--workers", type=int, default=common.DEFAULT_WORKERS, help="gunicorn workers (default 2)")
    add("--error-rate", type=float, default=0.05, help="upstream answers 500/429 (default 0.05)")
    add("--cut-rate", type=float, default=0.05, help="upstream answers cut mid-answer (default 0.05)")
    add("--slow-rate", type=float, default=0.10, help="upstream answers 0.5-2 s slower (default 0.10)")
    add("--chunk-delay-ms", type=int, default=50, help="pause between streamed chunks (default 50)")
    add("--tmpfs-mb", type=int, default=256, help="size of the database's tmpfs (default 256: room for the WAL)")
    add("--drain-seconds", type=float, default=90.0, help="wait for the outbox to drain at most (default 90)")
    add("--seed", type=int, default=21, help="seed of the faults and kills (default 21)")
    return parser.parse_args()


class Progress:
    """How many calls have ended; lets the fault threads wait for a point of the run."""

    def __init__(self, total: int):
        self.total, self.done = total, 0
        self._changed = threading.Condition()

    def step(self) -> None:
        with self._changed:
            self.done += 1
            self._changed.notify_all()

    def reached(self, fraction: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.done >= fraction * self.total)


# -- infrastructure -------------------------------------------------------------------------


@contextmanager
def tmpfs(size_mb: int) -> Iterator[Path]:
    """A new tmpfs of `size_mb` MiB mounted on a new directory; unmounted and removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="tollgate-chaos-db-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        done = subprocess.run(["umount", str(folder)], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"could not unmount {folder} (unmount it by hand): {done.stderr.strip()}", file=sys.stderr)
        else:
            folder.rmdir()


def upstream_flags(args) -> list[str]:
    return ["--error-rate", str(args.error_rate), "--cut-rate", str(args.cut_rate), "--slow-rate",
            str(args.slow_rate), "--chunk-delay-ms", str(args.chunk_delay_ms), "--seed", str(args.seed)]  # fmt: skip


def create_customers(url: str, prefix: str, args) -> list[str]:
    """The run's customers; the first `--limited` with a budget of `--budget-calls` calls."""
    one_call = call_units({"prompt_tokens": 20, "completion_tokens": MAX_TOKENS})
    customers = [f"{prefix}{number}" for number in range(args.customers)]
    for number, customer in enumerate(customers):
        budget = one_call * args.budget_calls if number < args.limited else UNLIMITED_BUDGET * UNITS_PER_USD
        body = plain_json.dumps({"user_id": customer, "max_budget": usd(budget)})  # the exact amount, no float
        headers = {**common.AUTH, "Content-Type": "application/json"}
        response = requests.post(f"{url}/customer/new", data=body, headers=headers, timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"/customer/new answered {response.status_code}: {response.text}")
    return customers


# -- calls ----------------------------------------------------------------------------------


def one_call(url: str, customer: str, stream: bool) -> Outcome:
    """One chat completion, read to its end."""
    body = {**common.chat_body(customer), "max_tokens": MAX_TOKENS}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    outcome = Outcome(stream=stream, status="")
    try:
        with requests.post(f"{url}/chat/completions", json=body, headers=common.AUTH, stream=stream,
                           timeout=CALL_TIMEOUT) as response:  # fmt: skip
            outcome.status, outcome.call_id = response.status_code, response.headers.get("x-litellm-call-id")
            if response.status_code == 200 and stream:
                outcome.ending, outcome.cost = read_stream(response)
            else:
                cost = response.headers.get("x-litellm-response-cost")
                outcome.cost = to_units(Decimal(cost)) if cost else None
                response.content  # noqa: B018 - read the whole answer: a cut body is not a complete call
    except requests.RequestException as exc:
        if isinstance(outcome.status, int):  # the answer began, and broke off
            outcome.ending = f"broken ({type(exc).__name__})"
        else:
            outcome.status = type(exc).__name__
    outcome.ended = time.monotonic()
    return outcome


def read_stream(response: requests.Response) -> tuple[str, int | None]:
    """(how the stream ended, its cost from its usage chunk): "[DONE]", "error event" or "no [DONE]"."""
    last, usage = b"", None
    for line in response.iter_lines():
        if not line:
            continue
        last = line
        if line.startswith(b"data: {") and b'"usage"' in line:
            usage = json.loads(line[6:]).get("usage") or usage
    cost = call_units(usage) if usage else None
    if last == b"data: [DONE]":
        return "[DONE]", cost
    return ("error event" if b'"error"' in last else "no [DONE]"), cost


def run_calls(url: str, customers: list[str], args, progress: Progress) -> list[Outcome]:
    """`--calls` calls from `--clients` threads, call k started no sooner than k x duration / calls."""
    began = time.monotonic()
    pace = args.duration / args.calls

    def call(number: int) -> Outcome:
        time.sleep(max(0.0, began + number * pace - time.monotonic()))
        try:
            return one_call(url, customers[number % len(customers)], stream=number % 2 == 1)
        finally:
            progress.step()

    with ThreadPoolExecutor(args.clients) as pool:
        return list(pool.map(call, range(args.calls)))


# -- faults ---------------------------------------------------------------------------------


def kill_workers(master: int, args, progress: Progress, record: Record) -> None:
    """SIGKILL one worker at each of `--kills` evenly spaced points; wait for its replacement."""
    chooser = random.Random(args.seed)
    for number in range(args.kills):
        progress.reached(KILLS_FROM + (KILLS_TO - KILLS_FROM) * number / max(args.kills - 1, 1))
        workers = common.children(master)
        if not workers:
            record.skipped.append(f"kill {number + 1}: no worker to kill")
            continue
        victim = chooser.choice(workers)
        os.kill(victim, signal.SIGKILL)
        record.kills.append((time.monotonic(), victim))
        deadline = time.monotonic() + 30
        while (victim in common.children(master) or len(common.children(master)) < args.workers) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)


def fill_disk(folder: Path, url: str, args, progress: Progress, record: Record) -> None:
    """Fill the database's tmpfs until ENOSPC, hold it full, free it."""
    if args.disk_full_seconds <= 0:
        return
    progress.reached(DISK_FULL_AT)
    path = folder / "fill"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for block in (b"\0" * (1 << 20), b"\0" * 4096, b"\0"):
            try:
                while True:
                    os.write(descriptor, block)
            except OSError as exc:
                if exc.errno != 28:  # ENOSPC
                    raise
        began = time.monotonic()
        try:
            record.disk_full_readiness = requests.get(f"{url}/health/readiness", timeout=10).status_code
        except requests.RequestException as exc:
            record.disk_full_readiness = type(exc).__name__
        time.sleep(max(0.0, args.disk_full_seconds - (time.monotonic() - began)))
    finally:
        os.close(descriptor)
        path.unlink()
    record.disk_full = (began, time.monotonic())


def hold_stalls(port: int, args, progress: Progress, record: Record) -> None:
    progress.reached(STALLS_AT)
    outcomes, unanswered = stalls.hold(port, args.stalls, args.stall_hold)
    for kind, at in unanswered:
        if near_kill(at, record):
            outcomes[f"{kind}: closed without an answer"] -= 1
            outcomes[f"{kind}: closed without an answer by a kill"] += 1
    record.stalls = +outcomes


def send_hostile(port: int, args, progress: Progress, record: Record) -> None:
    """`--hostile` requests, the kinds in turn, spread between HOSTILE_FROM and HOSTILE_TO of the run."""
    kinds = list(hostile.KINDS)
    for number in range(args.hostile):
        progress.reached(HOSTILE_FROM + (HOSTILE_TO - HOSTILE_FROM) * number / max(args.hostile, 1))
        kind = kinds[number % len(kinds)]
        status = hostile.send(port, kind)
        if not isinstance(status, int) and near_kill(time.monotonic(), record):
            status = f"{status} during a kill"
        record.hostile[kind, status] += 1


# -- main -----------------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    if os.geteuid() != 0:
        print("the chaos bench mounts a tmpfs: run it as root", file=sys.stderr)
        return 2
    stalls.raise_fd_limit(args.stalls)
    run_id = f"ch{random.Random().getrandbits(24):06x}"
    record, progress = Record(), Progress(args.calls)
    started = time.monotonic()
    with ExitStack() as stack:
        disk = stack.enter_context(tmpfs(args.tmpfs_mb))
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tollgate-chaos-")))
        upstream = stack.enter_context(common.fake_upstream(0, 3600, *upstream_flags(args)))
        sink = stack.enter_context(common.webhook_sink(3600, record=True))
        env = {
            "CONFIG_FILE_PATH": str(common.write_config(folder, upstream.url, webhooks=True)),
            "DATABASE_URL": f"sqlite:///{disk / 'tollgate.db'}",
            "LITELLM_MASTER_KEY": common.MASTER_KEY,
            "WEBHOOK_URL": sink.url,
        }
        server = stack.enter_context(tollgate_server(env, workers=args.workers))
        common.wait_for_workers(server.process.pid, args.workers)
        port = int(server.url.rsplit(":", 1)[1])
        customers = create_customers(server.url, f"{run_id}-", args)
        print(f"run {run_id}: {args.calls} calls over {args.customers} customers ({args.limited} with a budget of "
              f"{args.budget_calls} calls), {args.clients} clients, paced over {args.duration:g} s; database on a "
              f"{args.tmpfs_mb} MiB tmpfs at {disk}", flush=True)  # fmt: skip
        faults = [
            threading.Thread(target=kill_workers, args=(server.process.pid, args, progress, record)),
            threading.Thread(target=fill_disk, args=(disk, server.url, args, progress, record)),
            threading.Thread(target=hold_stalls, args=(port, args, progress, record)),
            threading.Thread(target=send_hostile, args=(port, args, progress, record)),
        ]
        for thread in faults:
            thread.start()
        outcomes = run_calls(server.url, customers, args, progress)
        calls_took = time.monotonic() - started
        for thread in faults:
            thread.join()
        waiting = drain(disk / "tollgate.db", args.drain_seconds)
        figures = compute(outcomes, read_database(disk / "tollgate.db"), sink.events(f"{run_id}-"), customers, record)
        extras = {
            "calls done in": f"{calls_took:.1f} s",
            "readiness at the end": requests.get(f"{server.url}/health/readiness", timeout=10).status_code,
            "workers at the end": len(common.children(server.process.pid)),
            "upstream completions served": upstream.calls(),
            "budgeted customers' spend": budget_use(disk / "tollgate.db", customers[: args.limited], args),
            "reservations left at the end": reservations_left(disk / "tollgate.db", server.log()),
            "server log": log_summary(server, run_id),
        }
    report(figures, outcomes, record, waiting, extras)
    print(f"\nwall time {time.monotonic() - started:.1f} s")
    print("\nFAIL: a figure is not 0" if figures.failed() else "\nevery figure is 0")
    return 1 if figures.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
