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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class Sink:
    def __init__(self):
        self.accepted = 0
        self.event_ids: set[str] = set()

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
                self.event_ids.add(json.loads(body).get("event_id"))
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    def counts(self) -> str:
        return f"{self.accepted} {len(self.event_ids)}"


def main() -> int:
    """Serve until stdin closes or the time bound passes, answering each stdin line with the counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="exit after this long at most (default 600)")
    parser.add_argument("--nice", type=int, default=19, help="CPU priority niceness to run at (default 19)")
    args = parser.parse_args()
    os.nice(args.nice)
    sink, loop, ready = Sink(), asyncio.new_event_loop(), threading.Event()
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
    for _ in sys.stdin:
        print(sink.counts(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
