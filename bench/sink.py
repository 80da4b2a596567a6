"""A fast webhook receiver for the benchmark, in its own process: `python -m bench.sink`.

It is asyncio, like the fake upstream, so that what it costs to receive an event (which a real
receiver pays on its own machine) takes as little as possible of the cores the benchmark shares;
and it runs at the lowest CPU priority (`--nice`, default 19), so that it takes the time the
calls leave idle rather than time from them: a receiver has a machine of its own, and what it
costs is no part of what webhooks cost Tollgate (`--nice 0` runs it at the default priority).
It listens on 127.0.0.1, keeps connections open, answers every POST 200, and prints its URL as
the first line of stdout; then it answers each line read on stdin with `<accepted> <distinct>`:
how many events it accepted and how many distinct `event_id`s they carry. It exits when stdin
closes or after `--seconds`, whichever comes first.

With `--record` it also keeps, per `event_id`, the event's name, customer, `spend` and message,
how many times it arrived and how many different bodies it arrived with; the stdin line
`events <prefix>` is answered with one JSON line
`{event_id: [event, customer_id, spend, arrivals, bodies, event_message]}` for the events whose
customer_id starts with `<prefix>` (`bench/scaleout.py` checks them).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import threading

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class Sink:
    def __init__(self, record: bool = False):
        self.accepted = 0
        self.event_ids: set[str] = set()
        self.record = record
        # event_id -> (event, customer_id, spend as sent, arrivals, digests of the bodies it came with, message)
        self.events: dict[str, tuple[str, str, str, list[int], set[bytes], str]] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.accepted += 1
                if self.record:
                    event = json.loads(body, parse_float=str)  # spend kept as sent, exact
                    self.keep(event, body)
                else:
                    event = json.loads(body)
                self.event_ids.add(event.get("event_id"))
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    def keep(self, event: dict, body: bytes) -> None:
        """Count one arrival of `event` and the body it came with."""
        name, customer, message = event.get("event"), event.get("customer_id"), event.get("event_message")
        spend = str(event.get("spend"))
        kept = self.events.setdefault(event.get("event_id"), (name, customer, spend, [0], set(), message))
        kept[3][0] += 1
        kept[4].add(hashlib.sha256(body).digest())

    def counts(self) -> str:
        return f"{self.accepted} {len(self.event_ids)}"

    def listing(self, prefix: str) -> str:
        """One JSON line: the recorded events of customers whose id starts with `prefix`."""
        return json.dumps(
            {
                event_id: [name, customer, spend, arrivals[0], len(bodies), message]
                for event_id, (name, customer, spend, arrivals, bodies, message) in list(self.events.items())
                if (customer or "").startswith(prefix)
            }
        )


async def _call(function, *args):
    """Run `function` on the event loop, so it reads the records between two handlers."""
    return function(*args)


def main() -> int:
    """Serve until stdin closes or the time bound passes, answering each stdin line with the counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="exit after this long at most (default 600)")
    parser.add_argument("--nice", type=int, default=19, help="CPU priority niceness to run at (default 19)")
    parser.add_argument("--record", action="store_true", help="keep every event's arrivals and bodies")
    args = parser.parse_args()
    os.nice(args.nice)
    sink, loop, ready = Sink(args.record), asyncio.new_event_loop(), threading.Event()
    port = []

    def serve() -> None:
        server = loop.run_until_complete(asyncio.start_server(sink.handle, "127.0.0.1", 0, backlog=1024))
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    ready.wait(10)
    timer = threading.Timer(args.seconds, loop.call_soon_threadsafe, args=(loop.stop,))
    timer.daemon = True
    timer.start()
    print(f"http://127.0.0.1:{port[0]}/hook", flush=True)
    for line in sys.stdin:
        command, _, prefix = line.strip().partition(" ")
        if command == "events":
            listing = asyncio.run_coroutine_threadsafe(_call(sink.listing, prefix), loop).result(30)
            print(listing, flush=True)
        else:
            print(sink.counts(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
