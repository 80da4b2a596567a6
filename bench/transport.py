"""What one upstream POST costs the client's CPU, per HTTP client: `python -m bench.transport`.

The fake upstream (its own process) answers at once; `--calls` (default 3000) chat completions
go out one after another on a kept-open connection, after a warm-up, through:

- `providers/http.py`'s `Upstreams` (urllib3, with Tollgate's deadline watch),
- a bare `urllib3.PoolManager`,
- a `requests.Session` (urllib3 underneath, with requests' sessions, hooks and environment look-ups),
- `http.client` itself, one connection: the floor none of the others can go under.

Prints the CPU time of this process per call (µs, median of `--rounds` rounds, default 5) and the
wall time per call. The CPU figure is what a relayed call pays in a worker for its transport; the
machine's other load moves the wall time more than the CPU time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import requests
import urllib3

from bench import common
from providers.http import Upstreams

WARMUP = 200
UPSTREAM_LIFETIME = 600.0


def clients(url: str) -> dict[str, Callable[[bytes], bytes]]:
    """One POST function per client, each keeping its connection open between calls."""
    headers = {"Content-Type": "application/json", "Authorization": "Bearer none"}
    upstreams = Upstreams()
    pool = urllib3.PoolManager()
    session = requests.Session()
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)

    def stdlib(body: bytes) -> bytes:
        connection.request("POST", parts.path, body, headers)
        return connection.getresponse().read()

    return {
        "Tollgate (urllib3 + deadline)": lambda body: upstreams.post(url, body, headers, timeout=30).content,
        "urllib3 PoolManager": lambda body: pool.request("POST", url, body=body, headers=headers, retries=False).data,
        "requests Session": lambda body: session.post(url, data=body, headers=headers, timeout=30).content,
        "http.client": stdlib,
    }


def measure(post: Callable[[bytes], bytes], body: bytes, calls: int) -> tuple[float, float]:
    """CPU and wall seconds per call."""
    for _ in range(WARMUP):
        post(body)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        post(body)
    return (time.process_time() - cpu) / calls, (time.perf_counter() - wall) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    body = json.dumps(common.chat_body("bench-user")).encode()
    with common.fake_upstream(0, UPSTREAM_LIFETIME) as upstream:
        posts = clients(f"{upstream.url}/chat/completions")
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in posts}
        for _ in range(args.rounds):  # rounds interleave the clients, so drift hits them alike
            for name, post in posts.items():
                results[name].append(measure(post, body, args.calls))
    print(f"{args.calls} calls x {args.rounds} rounds, one after another, fake upstream answering at once\n")
    print("| client | CPU µs per call | wall µs per call |")
    print("|---|---:|---:|")
    for name, figures in results.items():
        cpu = statistics.median(figure[0] for figure in figures) * 1e6
        wall = statistics.median(figure[1] for figure in figures) * 1e6
        print(f"| {name} | {cpu:.0f} | {wall:.0f} |")


if __name__ == "__main__":
    main()
