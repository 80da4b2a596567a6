"""Run the test webhook receiver (`tests/webhook_sink.py`) in its own process, for the benchmark.

Its own process keeps the sink's work off the load generator's GIL. It listens on 127.0.0.1,
prints its URL as the first line of stdout, then answers every line read on stdin with
`<accepted> <distinct>`: how many events it answered 2xx and how many distinct `event_id`s they
carry. It exits when stdin closes or after `--seconds`, whichever comes first.

    python -m bench.sink --seconds 600
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

from tests.webhook_sink import WebhookSink


def parse_args() -> argparse.Namespace:
    """The command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="exit after this long at most (default 600)")
    return parser.parse_args()


def counts(sink: WebhookSink) -> str:
    """`<accepted> <distinct event_id>` of the events the sink answered 2xx."""
    events = sink.accepted
    return f"{len(events)} {len({event.get('event_id') for event in events})}"


def main() -> int:
    """Serve until stdin closes or the time bound passes, answering each stdin line with the counts."""
    args = parse_args()
    timer = threading.Timer(args.seconds, os._exit, args=(0,))
    timer.daemon = True
    timer.start()
    sink = WebhookSink()
    sink.start()
    try:
        print(sink.url, flush=True)
        for _ in sys.stdin:
            print(counts(sink), flush=True)
    finally:
        sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
