"""Hold many streams open at once and report the proxy's memory: `python -m bench.streams`.

The fake upstream streams each answer in `--chunks` chunks, `--chunk-delay-ms` apart (default
5 x 1000 ms: a 5-second stream). `--streams` clients (default 500) open their streams together,
read them to the end and count failures; meanwhile the RSS of the gunicorn master and its
workers is sampled every 0.25 s. Everything runs on 127.0.0.1 and stops by pid.
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.common import AUTH, DEFAULT_WORKERS, MODEL, fake_upstream, format_rss, tollgate, tree_rss

REQUEST_TIMEOUT = 60.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--chunks", type=int, default=5)
    parser.add_argument("--chunk-delay-ms", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    return parser.parse_args()


def one_stream(url: str, user: str, barrier: threading.Barrier) -> str:
    """Open a stream, read it to its end; "ok" or what went wrong."""
    body = {"model": MODEL, "user": user, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    barrier.wait()
    try:
        with requests.post(f"{url}/chat/completions", json=body, headers=AUTH, stream=True,
                           timeout=REQUEST_TIMEOUT) as response:  # fmt: skip
            if response.status_code != 200:
                return f"HTTP {response.status_code}"
            lines = [line for line in response.iter_lines() if line]
    except requests.RequestException as exc:
        return type(exc).__name__
    return "ok" if lines and lines[-1] == b"data: [DONE]" else "incomplete"


def main() -> int:
    args = parse_args()
    expected = args.chunks * args.chunk_delay_ms / 1000
    extra = ("--chunks", str(args.chunks), "--chunk-delay-ms", str(args.chunk_delay_ms))
    with fake_upstream(0, 600, *extra) as upstream, tollgate(upstream, args.workers) as server:
        pid = server.process.pid
        print(f"tollgate: {args.workers} workers; RSS at start: {format_rss(tree_rss(pid))}")
        peak, done = {}, threading.Event()

        def sample() -> None:
            while not done.wait(0.25):
                rss = tree_rss(pid)
                if sum(rss.values()) > sum(peak.values()):
                    peak.clear()
                    peak.update(rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        barrier = threading.Barrier(args.streams, timeout=30)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=args.streams) as pool:
            outcomes = list(pool.map(lambda n: one_stream(server.url, f"s{n % 50}", barrier), range(args.streams)))
        elapsed = time.monotonic() - started
        done.set()
        sampler.join()
    failures = {o: outcomes.count(o) for o in set(outcomes) if o != "ok"}
    print(f"streams: {args.streams}, each {expected:g} s upstream; all done in {elapsed:.2f} s")
    print(f"completed: {outcomes.count('ok')}, failed: {sum(failures.values())} {failures}")
    print(f"peak RSS while held: {format_rss(peak)}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
