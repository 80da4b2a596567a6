"""What one webhook post costs the posting thread: `python -m bench.posts`.

Starts the benchmark sink (`bench/sink.py`, at the default priority here, so answers come back
at once) and POSTs the same 600-byte JSON body to it `--posts` times (default 3000, after 200
unmeasured), in three ways, printing the posting thread's CPU (`time.thread_time`) and the wall
time per post:

- through `providers.http.Upstreams.post`, one at a time (as calls reach upstreams);
- through `Upstreams.post_pipelined`, `--window` posts at a time (default 4,16), as the
  dispatcher posts (`WEBHOOK_PIPELINE_DEPTH`, default 16);
- with a bare socket: the request bytes written at once, the answer read from one buffered reader
  kept for the connection (what a minimal HTTP/1.1 client costs on this machine);
- pipelined on a bare socket, `--window` posts written in one write and their answers read in
  order.

The bare-socket ways are yardsticks for `providers/http.py`, not a client Tollgate uses. Runs on
127.0.0.1 only, bounded by the count and the sink's `--seconds`; the sink is stopped by its pid.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from bench import common
from providers.http import Upstreams

BODY = b'{"event_id":"evt_0","spend":0.000123,"pad":"' + b"a" * 550 + b'"}'
HEADERS = {"Content-Type": "application/json", "User-Agent": "Tollgate-Webhooks/1"}
WARMUP = 200
SINK_SECONDS = 300


def measure(label: str, posts: int, post: Callable[[], None], per_round: int = 1) -> None:
    """Time `posts // per_round` rounds of `post` and print CPU and wall microseconds per post."""
    rounds = posts // per_round
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(rounds):
        post()
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    done = rounds * per_round
    print(f"| {label} | {done} | {1e6 * cpu / done:.1f} | {1e6 * wall / done:.1f} |", flush=True)


def bare(port: int, window: int) -> tuple[Callable[[], None], socket.socket]:
    """A post of `window` pipelined requests on one kept connection, answers read in order."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = connection.makefile("rb")
    head = f"POST /hook HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    request = (head + f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY

    def post() -> None:
        connection.sendall(request * window)
        for _ in range(window):
            if not reader.readline().startswith(b"HTTP/1.1 2"):
                raise RuntimeError("the sink did not answer 2xx")
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            reader.read(length)

    return post, connection


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=3000, help="posts per way (default 3000)")
    parser.add_argument("--window", default="4,16", help="pipelined posts per write (default 4,16)")
    args = parser.parse_args()
    with common.webhook_sink(SINK_SECONDS, nice=0) as sink:
        url = sink.url
        port = urlsplit(url).port
        http = Upstreams()

        def through_upstreams() -> None:
            if http.post(url, BODY, HEADERS, 30.0).status_code != 200:
                raise RuntimeError("the sink did not answer 200")

        print("| way | posts | CPU µs/post | wall µs/post |\n|---|---:|---:|---:|")
        for _ in range(WARMUP):
            through_upstreams()
        measure("providers.http.Upstreams.post", args.posts, through_upstreams)
        windows = [int(size) for size in args.window.split(",") if size.strip()]
        for window in windows:

            def pipelined(window: int = window) -> None:
                answers = http.post_pipelined(url, [(BODY, HEADERS)] * window, 30.0)
                if answers.statuses != [200] * window:
                    raise RuntimeError(f"the sink did not answer 200 to all: {answers}")

            measure(f"Upstreams.post_pipelined, {window} at a time", args.posts, pipelined, window)
        for window in [1, *windows]:
            post, connection = bare(port, window)
            for _ in range(max(WARMUP // window, 1)):
                post()
            label = "bare socket, one at a time" if window == 1 else f"bare socket, {window} pipelined"
            measure(label, args.posts, post, window)
            connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
