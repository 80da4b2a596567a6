"""What webhooks add to a call's own path, counted rather than timed: `python -m bench.callpath`.

Runs `--calls` (default 300) chat completions through Flask's test client against the shipped
config.yaml's `mock` model, every call with a `user` (so every call is charged and, with
webhooks on, announces a `spend_tracked` event), on a fresh SQLite file, once with webhooks off
and once on (`alerting: ["webhook"]`, `WEBHOOK_URL` at a closed port on 127.0.0.1). The delivery
thread is stopped before the measured calls, so only what the calls themselves do is counted.
Prints per call, off and on: Python function calls (cProfile), SQL statements (the store's
trace callback) and WAL frames written (the WAL is truncated before, nothing checkpoints during);
then the functions whose calls per call changed.

Counts do not drift with the machine's speed, so a difference of one call shows; what a call
costs in time is bench.run's job.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import pstats
import sys
import tempfile
from pathlib import Path

from app import create_app
from bench import common
from config import load_config

CLOSED_PORT_URL = "http://127.0.0.1:9/webhook"  # never posted to: delivery is stopped
WARMUP = 20
SHOWN = 15


@dataclasses.dataclass
class Counts:
    functions: float
    statements: float
    wal_frames: float
    by_function: dict[str, float]


def measure(folder: Path, webhooks: bool, calls: int) -> Counts:
    environ = {"LITELLM_MASTER_KEY": common.MASTER_KEY, "DATABASE_URL": f"sqlite:///{folder / f'{webhooks}.db'}"}
    if webhooks:
        environ["WEBHOOK_URL"] = CLOSED_PORT_URL
    config = load_config("config.yaml", environ)
    if webhooks:
        config = dataclasses.replace(config, settings=dataclasses.replace(config.settings, alerting=("webhook",)))
    app = create_app(config)
    gateway, client = app.extensions["tollgate"], app.test_client()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "user": "bench-customer"}

    def call() -> None:
        response = client.post("/chat/completions", json=body, headers=common.AUTH)
        assert response.status_code == 200, response.get_data(as_text=True)

    for _ in range(WARMUP):
        call()
    if gateway.dispatcher is not None:
        gateway.dispatcher.stop()
    connection = gateway.store.engine._connection()  # this thread's, the one the test client's calls use
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    statements = []
    connection.set_trace_callback(statements.append)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(calls):
        call()
    profile.disable()
    connection.set_trace_callback(None)
    _, frames, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    gateway.store.engine.close()
    stats = pstats.Stats(profile)
    by_function = {
        f"{Path(file).name}:{name}": count / calls for (file, _, name), (_, count, *_) in stats.stats.items()
    }
    return Counts(stats.total_calls / calls, len(statements) / calls, frames / calls, by_function)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="measured calls each way (default 300)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tollgate-callpath-") as folder:
        off, on = (measure(Path(folder), webhooks, args.calls) for webhooks in (False, True))
    print("| per call | webhooks off | on | on − off |\n|---|---:|---:|---:|")
    for label, field in (
        ("Python function calls", "functions"),
        ("SQL statements", "statements"),
        ("WAL frames", "wal_frames"),
    ):
        a, b = getattr(off, field), getattr(on, field)
        print(f"| {label} | {a:,.2f} | {b:,.2f} | {b - a:+,.2f} |")
    names = set(off.by_function) | set(on.by_function)
    changed = {name: on.by_function.get(name, 0) - off.by_function.get(name, 0) for name in names}
    changed = sorted(((delta, name) for name, delta in changed.items() if abs(delta) >= 0.5), reverse=True)
    print("\nfunctions called more (+) or less (−) often per call with webhooks on:")
    for delta, name in changed[:SHOWN]:
        print(f"  {delta:+.2f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
