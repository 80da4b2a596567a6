"""What reading customers' activity costs with a big spend log: `python -m bench.activity`.

For each database (`--databases`, default `sqlite`; `postgres` makes a throwaway database on
127.0.0.1, dropped at the end) it fills the spend log with `--rows` calls (default 200,000) of
`--customers` customers (1,000) to `--models` models (3) over the last `--days` days (30), builds
the daily rollup from them with the SQL of the migration that fills it, and prints the median wall
time of `--repeat` (5) requests, through the app (Flask's test client, no HTTP), of:

- `GET /customer/daily/activity` for the whole period, every customer (`page_size` = the days);
- the same for one customer;
- `POST /global/spend/end_users` (the top 100 over the last 30 days);
- for comparison, one customer's period summed per day from the spend log itself (what the
  rollup saves), and the month's total from the spend log;
- `record_call` (a call's settlement, its rollup row included), µs per call over 2,000 calls.

The rollup holds at most days x customers x models rows, however many calls: the reads above
depend on those three, not on `--rows`. Bounded by the counts; nothing is left running.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app import create_app
from bench import common
from config import load_config
from providers.base import Usage
from spend.activity import roll_up
from spend.engines import open_store
from spend.sqlite import define_money_functions, sqlite_path
from spend.store import CallRecord
from tests.helpers import AUTH, MASTER_KEY, PRICED, write_config

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = {"sqlite": "spend/migrations/sqlite/0008_daily_activity.sql",
              "postgres": "spend/migrations/postgres/0002_daily_activity.sql"}  # fmt: skip
COLUMNS = (
    "request_id, customer_id, model_group, provider_model, deployment_id, prompt_tokens, completion_tokens, "
    "cached_tokens, cache_creation_tokens, reasoning_tokens, cost_units, priced, estimated, status, error, "
    "latency_ms, started_at, created_at, attempts"
)
BATCH = 20_000
SETTLED_CALLS = 2000
WHALE_SHARE = 0.1  # the big customer makes this share of the calls
BIG = "customer-00000"
ONE = f"end_user_ids={BIG}"


def spend_log_rows(rows: int, customers: int, models: int, days: int):
    """Random calls over the last `days` days, as spend-log rows (one in 50 failed); one customer
    (`customer-00000`) makes a tenth of them."""
    rng = random.Random(7)
    end = datetime.now(UTC)
    for n in range(rows):
        moment = end - timedelta(seconds=rng.uniform(0, days * 86_400 - 1))
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        model = f"model-{rng.randrange(models)}"
        failed = n % 50 == 0
        customer = 0 if rng.random() < WHALE_SHARE else rng.randrange(customers)
        yield (str(uuid.uuid4()), f"customer-{customer:05d}", model, f"openai/{model}", "dep",
               rng.randrange(10, 2000), rng.randrange(1, 500), 0, 0, 0, "0" if failed else str(rng.randrange(10**9)),
               True, False, "failure" if failed else "success", None, 100, stamp, stamp, 1)  # fmt: skip


def fill(kind: str, url: str, args) -> tuple[float, float]:
    """Migrate, write the spend-log rows, then build the rollup from them as the migration that
    adds it does; the seconds each of the two took."""
    store = open_store(url)
    store.engine.migrate()
    store.engine.close()
    rows = spend_log_rows(args.rows, args.customers, args.models, args.days)
    rollup = (ROOT / MIGRATIONS[kind]).read_text().split(";")[-1].strip()
    insert = f"INSERT INTO spend_logs ({COLUMNS}) VALUES ({', '.join('?' * 19)})"
    started = time.perf_counter()
    if kind == "sqlite":
        connection = sqlite3.connect(sqlite_path(url))
        define_money_functions(connection)
        with connection:
            connection.executemany(insert, rows)
        filled = time.perf_counter()
        with connection:
            connection.execute(rollup)
        connection.close()
    else:
        with common.connect(url) as connection:
            with connection.transaction(), connection.cursor().copy(f"COPY spend_logs ({COLUMNS}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            filled = time.perf_counter()
            with connection.transaction():
                connection.execute(rollup)
            connection.execute("ANALYZE")
    return filled - started, time.perf_counter() - filled


def timed(action: Callable[[], object], repeat: int) -> float:
    """Median wall ms of `repeat` runs, after one to warm up."""
    action()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def measure(kind: str, url: str, folder: Path, args) -> None:
    written, rolled_up = fill(kind, url, args)
    print(f"| {kind} | write {args.rows:,} spend-log rows | {written:.1f} s |")
    print(f"| {kind} | build their rollup from the spend log (the migration's fill) | {rolled_up:.1f} s |")
    config = write_config(folder, [{"model_name": "model-0", "litellm_params": {"model": "mock/model-0", **PRICED}}])
    app = create_app(load_config(str(config), {"LITELLM_MASTER_KEY": MASTER_KEY, "DATABASE_URL": url}))
    client, store = app.test_client(), app.extensions["tollgate"].store
    try:
        rollup_rows = store.engine.read(lambda tx: tx.execute("SELECT COUNT(*) FROM daily_activity").fetchone()[0])
        print(f"| {kind} | rollup rows | {int(rollup_rows):,} |")
        report(kind, client, store, args)
    finally:
        store.engine.close()


def report(kind: str, client, store, args) -> None:
    today = datetime.now(UTC).date()
    start = (today - timedelta(days=args.days - 1)).isoformat()
    span = f"start_date={start}&end_date={today.isoformat()}&page_size={args.days}"

    def get(query: str) -> None:
        response = client.get(f"/customer/daily/activity?{query}", headers=AUTH)
        assert response.status_code == 200, response.get_data(as_text=True)

    def top() -> None:
        assert client.post("/global/spend/end_users", headers=AUTH).status_code == 200

    def from_log(where: str, params: tuple) -> Callable[[], object]:
        sql = (f"SELECT substr(created_at, 1, 10), units_sum(cost_units), COUNT(*) FROM spend_logs "
               f"WHERE created_at >= ?{where} GROUP BY substr(created_at, 1, 10)")  # fmt: skip
        return lambda: store.engine.read(lambda tx: tx.execute(sql, (start, *params)).fetchall())

    lines = [
        (f"GET /customer/daily/activity, {args.days} days, every customer", lambda: get(span)),
        (f"GET /customer/daily/activity, {args.days} days, the big customer", lambda: get(f"{span}&{ONE}")),
        ("POST /global/spend/end_users (top 100, 30 days)", top),
        ("the big customer's days from the spend log (no rollup)", from_log(" AND customer_id = ?", (BIG,))),
        ("every customer's days from the spend log (no rollup)", from_log("", ())),
    ]  # fmt: skip
    for label, action in lines:
        print(f"| {kind} | {label} | {timed(action, args.repeat):.1f} ms |")
    print(f"| {kind} | record_call with its rollup row | {settle_cost(store):.0f} µs per call |")
    print(f"| {kind} | the rollup statement alone | {rollup_cost(store):.0f} µs per call |")


def settle_cost(store) -> float:
    """Wall µs of one call's settlement (spend-log row, rollup row, customer's charge)."""
    now = time.time()
    started = time.perf_counter()
    for n in range(SETTLED_CALLS):
        store.ledger.record_call(
            CallRecord(
                str(uuid.uuid4()),
                f"customer-{n % 100:05d}",
                "model-0",
                "openai/model-0",
                "dep",
                Usage(prompt_tokens=10, completion_tokens=5),
                1000,
                now,
                now,
            )  # fmt: skip
        )
    return (time.perf_counter() - started) / SETTLED_CALLS * 1e6


def rollup_cost(store) -> float:
    """Wall µs of the rollup's upsert alone: SETTLED_CALLS of them in one transaction."""
    now = time.time()
    records = [CallRecord(str(uuid.uuid4()), f"customer-{n % 100:05d}", "model-0", "openai/model-0", "dep",
                          Usage(prompt_tokens=10, completion_tokens=5), 1000, now, now)
               for n in range(SETTLED_CALLS)]  # fmt: skip

    def write(tx) -> None:
        for record in records:
            roll_up(tx, store.engine, record)

    started = time.perf_counter()
    store.engine.write(write)
    return (time.perf_counter() - started) / SETTLED_CALLS * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="spend-log rows (default 200000)")
    parser.add_argument("--customers", type=int, default=1000, help="customers (default 1000)")
    parser.add_argument("--models", type=int, default=3, help="models (default 3)")
    parser.add_argument("--days", type=int, default=30, help="days the calls spread over (default 30)")
    parser.add_argument("--repeat", type=int, default=5, help="requests timed per line (default 5)")
    parser.add_argument("--databases", default="sqlite", help="engines (default sqlite; or sqlite,postgres)")
    args = parser.parse_args()
    print("| database | what | cost |\n|---|---|---:|")
    with tempfile.TemporaryDirectory(prefix="tollgate-activity-") as folder:
        for kind in args.databases.split(","):
            with common.database(kind, Path(folder)) as url:
                measure(kind, url, Path(folder), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
