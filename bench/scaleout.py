"""Several Tollgates on one PostgreSQL database, as boxes of one deployment: `python -m bench.scaleout`.

It creates a throwaway PostgreSQL database (`bench_<random>` on `BENCH_POSTGRES`, default
postgresql://postgres@127.0.0.1:5432/postgres, dropped at the end), starts the fast local fake
upstream, the benchmark's webhook receiver (`bench/sink.py --record`, which keeps every event's
arrivals and bodies) and `--instances` Tollgates (default 3; the Procfile's `web:` command,
`--workers` gunicorn workers each, each on its own port, all started at once), webhooks on.
Then it measures and checks:

(a) spend across instances: `--customers` customers (default 6, each with a large budget, so every
    call takes the customer's row lock) get `--calls` calls each (default 50), all sent at once
    (300 by default), call k of customer c to instance (c + k) mod 3, so each customer's calls
    rotate over every instance. Every call must answer 200; every instance's `/customer/info`
    must show each customer's spend as exactly the sum of its calls' costs (from the usage they
    answered, at the bench model's prices); the database's account, its spend-log rows and the
    reservations left must agree; and the receiver must have one `spend_tracked` event per call
    (per customer), each event_id with one body however often it arrived.
(b) a budget across instances: a customer with `max_budget` = `--budget-calls` (default 10)
    times one call's cost gets `--parallel` calls (default 60) at once, spread over the
    instances, each with `max_tokens` 20 (so its reservation is bounded). Standard enforcement:
    the final spend must not pass budget + one call's cost; then the instances are restarted with
    `litellm_settings.budget_enforcement: strict` and a new customer: the spend must not pass the
    budget. Each budget event (`budget_crossed` …) must have arrived at most once.
(c) throughput: `--clients` wrk connections (default 32) for `--duration` seconds (default 8)
    through the instances at once (one wrk per instance, the connections split among them),
    alternating with the same connections through one instance (ABAB, `--rounds` of each,
    default 2). Requests/s in all, p50/p99 per wrk, and the CPU per call of all the Tollgates and
    of the PostgreSQL backends serving the database. Each point's events are delivered before the
    next starts. All of it shares this machine's cores: more instances add no cores here.

Everything runs on 127.0.0.1; the whole run is bounded by `--timeout` seconds (default 600), each
call by CALL_TIMEOUT; every process started is stopped by its pid. Exits 0 when every guarantee
held, 1 when one failed (the failures and the instances' warnings are printed), 2 when wrk is
missing.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import requests

from bench import common, run, wrk
from tests.servers import REPO, Server, free_port, procfile_command, stop, wait_until_serving

CALL_TIMEOUT = 60.0
START_TIMEOUT = 30.0
EVENTS_TIMEOUT = 60.0  # how long the events of a part may take to reach the receiver
QUIET_SECONDS = 1.0  # events are counted once none arrived for this long
BARRIER_TIMEOUT = 30.0
UNITS_PER_USD = 10**12
MAX_TOKENS = 20  # the budget calls' max_tokens: the fake upstream answers 20 prompt tokens, at most 20 completion
LOAD_BUDGET = 1000000  # USD, the (a) and (c) customers' budget: never reached
WARMUP_SECONDS = 2


@dataclass
class Report:
    """What a run found: lines to print and the guarantees that failed."""

    failures: list[str] = field(default_factory=list)

    def check(self, holds: bool, what: str) -> bool:
        """Print `what` with PASS or FAIL; remember a failure."""
        print(f"{'PASS' if holds else 'FAIL'}: {what}", flush=True)
        if not holds:
            self.failures.append(what)
        return holds


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=3, help="Tollgate instances (default 3)")
    parser.add_argument("--workers", type=int, default=common.DEFAULT_WORKERS, help="workers per instance (default 2)")
    parser.add_argument("--customers", type=int, default=6, help="(a) customers (default 6)")
    parser.add_argument("--calls", type=int, default=50, help="(a) calls per customer, all at once (default 50)")
    parser.add_argument("--budget-calls", type=int, default=10, help="(b) budget in calls (default 10)")
    parser.add_argument("--parallel", type=int, default=60, help="(b) calls at once (default 60)")
    parser.add_argument("--clients", type=int, default=32, help="(c) wrk connections in all (default 32)")
    parser.add_argument("--duration", type=int, default=8, help="(c) seconds per point (default 8)")
    parser.add_argument("--rounds", type=int, default=2, help="(c) rounds of one instance, then all (default 2)")
    parser.add_argument("--users", type=int, default=100, help="(c) customers the load cycles over (default 100)")
    parser.add_argument("--timeout", type=int, default=600, help="bound on the whole run in seconds (default 600)")
    parser.add_argument(
        "--pool-size", type=int, help="DATABASE_POOL_SIZE of every worker (default: the environment's, else 10)"
    )
    args = parser.parse_args()
    if args.instances < 1 or args.clients < args.instances:
        parser.error("--instances must be at least 1 and --clients at least --instances")
    return args


# -- money -------------------------------------------------------------------------------


def call_units(usage: dict) -> int:
    """A call's exact cost in pico-dollars at the bench model's prices, from the usage it answered."""
    amount = (
        Decimal(repr(common.INPUT_COST_PER_TOKEN)) * usage["prompt_tokens"]
        + Decimal(repr(common.OUTPUT_COST_PER_TOKEN)) * usage["completion_tokens"]
    )
    return int((amount * UNITS_PER_USD).to_integral_value(rounding=ROUND_HALF_EVEN))


def usd(units: int) -> str:
    """Pico-dollars as a plain decimal USD string."""
    return f"{Decimal(units) / UNITS_PER_USD:f}"


# -- processes ---------------------------------------------------------------------------


@contextmanager
def instances(
    count: int, workers: int, folder: Path, config: Path, database_url: str, webhook_url: str, pool_size: int
) -> Iterator[list[Server]]:
    """`count` Tollgates (the Procfile command) on one database, started at once; yield once every
    one answers with all its workers up; each is stopped by its pid."""
    with ExitStack() as stack:
        servers = []
        for number in range(count):
            port = free_port()
            env = {
                **os.environ,
                "PORT": str(port),
                "WEB_CONCURRENCY": str(workers),
                "CONFIG_FILE_PATH": str(config),
                "DATABASE_URL": database_url,
                "LITELLM_MASTER_KEY": common.MASTER_KEY,
                "WEBHOOK_URL": webhook_url,
                "DATABASE_POOL_SIZE": str(pool_size),
            }
            log_path = folder / f"tollgate-{config.parent.name}-{number + 1}.log"
            log_file = stack.enter_context(log_path.open("wb"))
            process = subprocess.Popen(
                procfile_command(), cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            stack.callback(stop, process)
            servers.append(Server(f"http://127.0.0.1:{port}", process, log_path))
        for server in servers:
            wait_until_serving(server, START_TIMEOUT)
            try:
                common.wait_for_workers(server.process.pid, workers)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}; its log ends:\n{server.log()[-4000:]}") from None
        yield servers


def write_config(folder: Path, name: str, upstream_url: str, settings: dict | None = None) -> Path:
    """The bench config (webhooks on) in its own subfolder `name`, with `litellm_settings`."""
    (folder / name).mkdir()
    return common.write_config(folder / name, upstream_url, webhooks=True, litellm_settings=settings)


# -- calls -------------------------------------------------------------------------------


def create_customer(server: Server, user_id: str, max_budget: float) -> dict:
    response = requests.post(
        f"{server.url}/customer/new",
        json={"user_id": user_id, "max_budget": max_budget},
        headers=common.AUTH,
        timeout=CALL_TIMEOUT,
    )
    if response.status_code != 200:
        raise RuntimeError(f"/customer/new answered {response.status_code}: {response.text}")
    return response.json()


def spend_shown(server: Server, user_id: str) -> float:
    """The customer's spend as the instance's /customer/info shows it."""
    response = requests.get(
        f"{server.url}/customer/info", params={"end_user_id": user_id}, headers=common.AUTH, timeout=CALL_TIMEOUT
    )
    response.raise_for_status()
    return response.json()["spend"]


def at_once(jobs: list[tuple[str, dict]]) -> list[tuple[int, dict | str]]:
    """POST every (url, body) of `jobs` from its own thread, released together by a barrier;
    (status, JSON answer or text) each, status 0 when no answer came."""
    barrier = threading.Barrier(len(jobs))

    def call(job: tuple[str, dict]) -> tuple[int, dict | str]:
        url, body = job
        barrier.wait(BARRIER_TIMEOUT)
        try:
            response = requests.post(url, json=body, headers=common.AUTH, timeout=CALL_TIMEOUT)
        except requests.RequestException as exc:
            return 0, str(exc)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(call, jobs))


def chat(server: Server, user: str, max_tokens: int | None = None) -> tuple[str, dict]:
    body = common.chat_body(user)
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return f"{server.url}/chat/completions", body


# -- the database and the receiver -------------------------------------------------------


def query(database_url: str, sql: str, params: tuple = ()) -> list[tuple]:
    with common.connect(database_url) as connection:
        return connection.execute(sql, params).fetchall()


def settled_events(sink: common.Sink, prefix: str, expected: int) -> dict[str, list]:
    """The receiver's events of customers starting with `prefix` once `expected` spend_tracked
    events arrived and nothing more arrived for QUIET_SECONDS (at most EVENTS_TIMEOUT)."""
    deadline = time.monotonic() + EVENTS_TIMEOUT
    last, quiet_since = None, time.monotonic()
    while True:
        events = sink.events(prefix)
        arrivals = sum(event[3] for event in events.values())
        tracked = sum(1 for event in events.values() if event[0] == "spend_tracked")
        if arrivals != last:
            last, quiet_since = arrivals, time.monotonic()
        if tracked >= expected and time.monotonic() - quiet_since >= QUIET_SECONDS:
            return events
        if time.monotonic() >= deadline:
            return events
        time.sleep(0.2)


def outbox_states(database_url: str, prefix: str) -> dict[str, int]:
    rows = query(
        database_url,
        "SELECT status, count(*) FROM webhook_events WHERE customer_id LIKE %s GROUP BY status",
        (f"{prefix}%",),
    )
    return {status: count for status, count in rows}


def ledger(database_url: str, user_id: str) -> tuple[int, int, int, int, int]:
    """(spend_units, reserved_units, spend-log rows, their cost sum, reservations left) in the database."""
    account = query(
        database_url, "SELECT spend_units, reserved_units FROM spend_accounts WHERE user_id = %s AND scope = ''",
        (user_id,),
    )  # fmt: skip
    spend, reserved = (int(account[0][0]), int(account[0][1])) if account else (0, 0)
    rows, cost = query(
        database_url, "SELECT count(*), COALESCE(sum(cost_units), 0) FROM spend_logs WHERE customer_id = %s",
        (user_id,),
    )[0]  # fmt: skip
    (left,) = query(database_url, "SELECT count(*) FROM reservations WHERE user_id = %s", (user_id,))[0]
    return spend, reserved, int(rows), int(cost), int(left)


# -- (a) spend across instances ----------------------------------------------------------


def part_a(servers, sink, database_url, prefix, args, report: Report) -> None:
    customers = [f"{prefix}{number}" for number in range(args.customers)]
    for number, customer in enumerate(customers):
        create_customer(servers[number % len(servers)], customer, LOAD_BUDGET)
    jobs, owners = [], []
    for call in range(args.calls):
        for number, customer in enumerate(customers):
            jobs.append(chat(servers[(number + call) % len(servers)], customer))
            owners.append(customer)
    print(f"\n## (a) {len(jobs)} calls at once over {len(customers)} customers and {len(servers)} instances\n")
    began = time.monotonic()
    answers = at_once(jobs)
    took = time.monotonic() - began
    statuses = Counter(status for status, _ in answers)
    expected, served = Counter(), Counter()
    for customer, (status, answer) in zip(owners, answers, strict=True):
        if status == 200:
            expected[customer] += call_units(answer["usage"])
            served[customer] += 1
    print(f"answered in {took:.2f} s: {dict(statuses)}")
    report.check(statuses == Counter({200: len(jobs)}), f"(a) all {len(jobs)} calls answered 200")
    events = settled_events(sink, prefix, len(jobs))
    header = ["customer", "calls 200", "expected USD"]
    header += [f"instance {number + 1} /customer/info" for number in range(len(servers))]
    header += ["DB spend USD", "spend-log rows", "reserved left", "spend_tracked delivered", "events' spend sum"]
    header += ["arrived twice+", "event_ids with 2+ bodies"]
    print("\n| " + " | ".join(header) + " |\n|---|" + "---:|" * (len(header) - 1))
    wrong = {"spend": [], "reserved": [], "events": [], "bodies": []}
    for customer in customers:
        want, calls = expected[customer], served[customer]
        shown = [spend_shown(server, customer) for server in servers]
        spend, reserved, rows, logged, left = ledger(database_url, customer)
        tracked = [event for event in events.values() if event[0] == "spend_tracked" and event[1] == customer]
        event_spend = sum((Decimal(event[2]) for event in tracked), Decimal(0))
        twice = sum(1 for event in tracked if event[3] > 1)
        bodies = sum(1 for event in tracked if event[4] > 1)
        cells = [customer, calls, usd(want), *shown, usd(spend), f"{rows} ({usd(logged)})", reserved + left]
        cells += [len(tracked), f"{event_spend:f}", twice, bodies]
        print("| " + " | ".join(str(cell) for cell in cells) + " |")
        if not (all(value == want / UNITS_PER_USD for value in shown) and spend == want == logged and rows == calls):
            wrong["spend"].append(customer)
        if reserved or left:
            wrong["reserved"].append(customer)
        if len(tracked) != calls or event_spend * UNITS_PER_USD != want:
            wrong["events"].append(customer)
        if bodies:
            wrong["bodies"].append(customer)
    print()
    report.check(
        not wrong["spend"],
        "(a) every customer's spend is the exact sum of its calls' costs on every instance, in its account and "
        f"in the spend log {wrong['spend'] or ''}",
    )
    report.check(not wrong["reserved"], f"(a) no reservation left {wrong['reserved'] or ''}")
    report.check(
        not wrong["events"],
        f"(a) one spend_tracked event delivered per call, {args.calls} per customer, their spend summing to the "
        f"charge {wrong['events'] or ''}",
    )
    report.check(not wrong["bodies"], f"(a) each event_id arrived with one body {wrong['bodies'] or ''}")
    states = outbox_states(database_url, prefix)
    print(f"\noutbox rows of these customers by status: {states}")
    report.check(set(states) == {"delivered"}, "(a) every outbox event of these customers is marked delivered")


# -- (b) a budget across instances -------------------------------------------------------


def part_b(servers, sink, database_url, customer: str, mode: str, args, report: Report) -> None:
    one_call = call_units({"prompt_tokens": 20, "completion_tokens": MAX_TOKENS})
    budget = args.budget_calls * one_call
    created = create_customer(servers[0], customer, budget / UNITS_PER_USD)
    (stored,) = query(database_url, "SELECT max_budget_units FROM budgets WHERE owner_user_id = %s", (customer,))[0]
    jobs = [chat(servers[number % len(servers)], customer, MAX_TOKENS) for number in range(args.parallel)]
    print(f"\n## (b) {mode}: budget {usd(budget)} USD ({args.budget_calls} calls), {len(jobs)} calls at once\n")
    print(f"max_budget shown {created['litellm_budget_table']['max_budget']}, stored {int(stored)} units")
    answers = at_once(jobs)
    statuses = Counter(status for status, _ in answers)
    refused = sum(
        1 for status, answer in answers if 400 <= status < 500 and "ExceededBudget" in str(answer)
    )  # the budget's refusals
    served = [answer for status, answer in answers if status == 200]
    print(f"answers: {dict(statuses)} ({refused} refused over budget)")
    print(f"completion tokens of the calls served: {dict(Counter(a['usage']['completion_tokens'] for a in served))}")
    spend, reserved, rows, logged, left = ledger(database_url, customer)
    shown = [spend_shown(server, customer) for server in servers]
    events = settled_events(sink, customer, len(served))
    kinds = Counter(event[0] for event in events.values() if event[1] == customer)
    # A budget event fires once per customer, event and threshold (85% and 95% are two thresholds).
    marks = Counter((event[0], threshold(event[5])) for event in events.values() if event[0] != "spend_tracked")
    bodies = sum(1 for event in events.values() if event[4] > 1)
    print(f"spend {usd(spend)} USD = {spend / one_call:.2f} calls; spend-log rows {rows} ({usd(logged)} USD)")
    print(f"/customer/info spend per instance: {shown}; reserved left {reserved}, reservations left {left}")
    print(f"events delivered: {dict(kinds)}")
    report.check(int(stored) == budget, f"(b) {mode}: the budget is stored as {budget} units exactly")
    report.check(len(served) + refused == len(jobs), f"(b) {mode}: every call served or refused over budget")
    bound, name = (budget, "budget") if mode == "strict" else (budget + one_call, "budget + one call")
    report.check(
        spend <= bound,
        f"(b) {mode}: final spend {usd(spend)} ≤ {name} {usd(bound)} USD ({len(served)} calls served)",
    )
    report.check(
        spend == logged and reserved == 0 and left == 0 and all(value == spend / UNITS_PER_USD for value in shown),
        f"(b) {mode}: account, spend log and every instance agree; no reservation left",
    )
    report.check(
        kinds["spend_tracked"] == len(served) and bodies == 0,
        f"(b) {mode}: one spend_tracked event per call served, each event_id with one body",
    )
    report.check(
        all(count <= 1 for count in marks.values()),
        f"(b) {mode}: each budget event (event, threshold) delivered at most once {dict(marks)}",
    )


def threshold(message: str | None) -> str:
    """The threshold a `threshold_crossed` event's message names ("reached 85% of budget"), else ""."""
    found = re.search(r"reached (\S+)% of budget", message or "")
    return found.group(1) if found else ""


# -- (c) throughput ----------------------------------------------------------------------


def split(clients: int, parts: int) -> list[int]:
    """`clients` connections over `parts` wrks, as evenly as they go (11, 11, 10)."""
    return [clients // parts + (1 if number < clients % parts else 0) for number in range(parts)]


def drive(binary: str, servers: list[Server], clients: int, seconds: int, load: wrk.Load) -> list[wrk.Result]:
    """One wrk per server, all at once, the `clients` connections split among them."""
    shares = split(clients, len(servers))
    with ThreadPoolExecutor(len(servers)) as pool:
        futures = [
            pool.submit(wrk.run, binary, f"{server.url}/chat/completions", share, seconds, load)
            for server, share in zip(servers, shares, strict=True)
        ]
        return [future.result() for future in futures]


def part_c(binary, servers, sink, database_url, prefix, args, report: Report) -> None:
    for number in range(args.users):
        create_customer(servers[number % len(servers)], f"{prefix}{number}", LOAD_BUDGET)
    load = wrk.Load(common.MASTER_KEY, args.users, prefix, common.MODEL, False)
    drive(binary, servers, 8, WARMUP_SECONDS, load)
    run.drain_sink(sink)
    name = common.postgres_name(database_url)
    print(f"\n## (c) {args.clients} clients, {args.duration} s per point, ABAB\n")
    print("| round | through | requests | req/s | p50 ms per wrk | p99 ms per wrk | errors | Tollgate CPU ms/call "
          "| PostgreSQL CPU ms/call |")  # fmt: skip
    print("|---:|---|---:|---:|---|---|---:|---:|---:|")
    rates: dict[str, list[float]] = {}
    for round_number in range(args.rounds):
        for targets in (servers[:1], servers):
            label = f"{len(targets)} instance{'s' if len(targets) > 1 else ''}"
            cpu_before = sum(run.tree_cpu_seconds(server.process.pid) for server in servers)
            backends = run.BackendCpu(database_url)
            before = sink.counts()[0]
            results = drive(binary, targets, args.clients, args.duration, load)
            cpu = sum(run.tree_cpu_seconds(server.process.pid) for server in servers) - cpu_before
            database_cpu = backends.seconds()
            requests_done = sum(result.requests for result in results)
            rate = sum(result.rate() for result in results)
            errors = sum(result.errors() for result in results)
            rates.setdefault(label, []).append(rate)
            cells = [
                round_number + 1, label, requests_done, f"{rate:.0f}",
                " / ".join(f"{result.p50_ms:.1f}" for result in results),
                " / ".join(f"{result.p99_ms:.1f}" for result in results),
                "; ".join(result.error_text() for result in results),
                f"{cpu * 1000 / max(requests_done, 1):.2f}",
                "?" if database_cpu is None else f"{database_cpu * 1000 / max(requests_done, 1):.2f}",
            ]  # fmt: skip
            print("| " + " | ".join(str(cell) for cell in cells) + " |", flush=True)
            report.check(errors == 0, f"(c) round {round_number + 1}, {label}: no error")
            ok = sum(result.requests - result.non2xx for result in results)
            run.drain_sink(sink, before + ok)
    print()
    for label, values in rates.items():
        print(f"{label}: median {statistics.median(values):.0f} req/s ({min(values):.0f}–{max(values):.0f})")
    print(f"(database {name}; CPU is of all {len(servers)} Tollgates' process trees and of its PostgreSQL backends)")


# -- main --------------------------------------------------------------------------------


class TimeBound(Exception):
    """The run passed --timeout."""


def main() -> int:
    args = parse_args()
    binary = wrk.find_or_say()
    if binary is None:
        return 2

    def out_of_time(signum, frame):
        raise TimeBound(f"the run passed --timeout {args.timeout} s")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(args.timeout)
    report = Report()
    run_id = f"so{uuid.uuid4().hex[:6]}"
    print(f"machine: {run.machine(binary)}, load average {os.getloadavg()[0]:.2f} at start")
    try:
        with ExitStack() as stack:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tollgate-scaleout-")))
            upstream = stack.enter_context(common.fake_upstream(0, args.timeout + 60))
            sink = stack.enter_context(common.webhook_sink(args.timeout + 60, record=True))
            database_url = stack.enter_context(common.database("postgres", folder))
            (connections,) = query(common.POSTGRES_SERVER, "SHOW max_connections")[0]
            (in_use,) = query(common.POSTGRES_SERVER, "SELECT count(*) FROM pg_stat_activity")[0]
            pool = args.pool_size or int(os.environ.get("DATABASE_POOL_SIZE", "10"))
            most = args.instances * args.workers * pool
            print(
                f"database {common.postgres_name(database_url)}; {args.instances} instances x {args.workers} workers "
                f"x pool ≤ {pool} = {most} connections at most; server max_connections {connections}, "
                f"{in_use} sessions open at start"
            )
            if most + int(in_use) > int(connections):
                print(f"warning: the server may run out of connections ({most} + {in_use} > {connections})")
            standard = write_config(folder, "standard", upstream.url)
            with instances(args.instances, args.workers, folder, standard, database_url, sink.url, pool) as servers:
                part_a(servers, sink, database_url, f"{run_id}-a", args, report)
                part_b(servers, sink, database_url, f"{run_id}-b-standard", "standard", args, report)
                part_c(binary, servers, sink, database_url, f"{run_id}-c-", args, report)
                excerpts = {server.url: run.log_excerpt(server.log()) for server in servers}
            strict = write_config(folder, "strict", upstream.url, {"budget_enforcement": "strict"})
            with instances(args.instances, args.workers, folder, strict, database_url, sink.url, pool) as servers:
                part_b(servers, sink, database_url, f"{run_id}-b-strict", "strict", args, report)
                excerpts.update({f"{server.url} (strict)": run.log_excerpt(server.log()) for server in servers})
            print()
            for where, lines in excerpts.items():
                print(f"{where}: {lines[0]}")
                for line in lines[1 : 1 + (run.EXCERPT_LINES if report.failures else 5)]:
                    print(f"  {line}")
    except TimeBound as exc:
        report.failures.append(str(exc))
        print(f"FAIL: {exc}")
    finally:
        signal.alarm(0)
    print(f"\n{len(report.failures)} guarantee(s) failed" if report.failures else "\nevery guarantee held")
    for failure in report.failures:
        print(f"  {failure}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
