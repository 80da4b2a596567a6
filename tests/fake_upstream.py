"""A fast local OpenAI-compatible upstream for tests and benchmarks (127.0.0.1 only).

It answers `POST …/chat/completions` and `…/embeddings` with a fixed usage after an optional
delay, and `GET /stats` with how many calls it served. asyncio keeps thousands of delayed calls
open at once in one thread. Run it alone for the benchmarks:

    python tests/fake_upstream.py --port 9100 --delay-ms 2000

or in-process from a test:

    with FakeUpstream(delay_ms=0) as upstream:
        upstream.url  # http://127.0.0.1:<port>/v1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import threading
import time
from dataclasses import dataclass


@dataclass
class Behaviour:
    delay_ms: int = 0
    prompt_tokens: int = 20
    completion_tokens: int = 20
    status: int = 200
    chunks: int = 5  # content chunks of a streamed answer
    chunk_delay_ms: int = 0
    hold_after_first: threading.Event | None = None  # a stream waits for this after its first chunk
    cut_after: int | None = None  # a stream drops the connection after this many chunks
    faults: Faults | None = None  # faults drawn per call (the chaos bench); None: every call as above


@dataclass
class Faults:
    """Faults drawn at random per completion, so one upstream serves good and bad calls mixed (all
    off by default): `error_rate` of the calls answer one of `error_statuses`; `cut_rate` are cut
    mid-answer (a plain answer after its headers and half its body, a stream after a random
    number of its events); `slow_rate` wait a further `slow_ms` (a random span) first."""

    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 429)
    cut_rate: float = 0.0
    slow_rate: float = 0.0
    slow_ms: tuple[int, int] = (500, 2000)
    seed: int | None = None

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    def draw(self, events: int) -> tuple[int, int | None, float]:
        """(status to answer, events to send before cutting or None, extra delay in seconds) for one call."""
        roll = self.random.random()
        delay = self.random.uniform(*self.slow_ms) / 1000 if self.random.random() < self.slow_rate else 0.0
        if roll < self.error_rate:
            return self.random.choice(self.error_statuses), None, delay
        if roll < self.error_rate + self.cut_rate:
            return 200, self.random.randrange(events), delay
        return 200, None, delay


class FakeUpstream:
    """The server, run on its own event loop in a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **behaviour):
        self.host, self.port = host, port
        self.behaviour = Behaviour(**behaviour)
        self.calls = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def __enter__(self) -> FakeUpstream:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, self.host, self.port, backlog=4096, limit=1 << 20)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake upstream did not start")

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            self._server.close()
            handlers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, path, headers = _parse_head(head)
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                if method == "POST" and b'"stream": true' in body.replace(b'"stream":true', b'"stream": true'):
                    if not await self._stream(writer, json.loads(body)):
                        return
                    continue
                status, payload, cut = await self._respond(method, path, body)
                head = (
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
                )
                writer.write(head.encode() + (payload[: len(payload) // 2] if cut else payload))
                await writer.drain()
                if cut:
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _stream(self, writer: asyncio.StreamWriter, request: dict) -> bool:
        """An SSE answer in HTTP chunks, paced by the behaviour; False when it cut the connection."""
        behaviour = self.behaviour
        events = _stream_events(request, behaviour)
        status, cut_after, delay = self._fault(len(events))
        cut_after = behaviour.cut_after if cut_after is None else cut_after
        if behaviour.delay_ms or delay:
            await asyncio.sleep(behaviour.delay_ms / 1000 + delay)
        self.calls += 1
        if status != 200:
            error = json.dumps({"error": {"message": "fake upstream failure", "type": "server_error"}}).encode()
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(error)}\r\n\r\n".encode() + error)
            await writer.drain()
            return True
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for index, event in enumerate(events):
            if cut_after is not None and index >= cut_after:
                writer.close()
                return False
            await _send_chunk(writer, event)
            if index == 0 and behaviour.hold_after_first is not None:
                await asyncio.get_running_loop().run_in_executor(None, behaviour.hold_after_first.wait, 10)
            elif behaviour.chunk_delay_ms:
                await asyncio.sleep(behaviour.chunk_delay_ms / 1000)
        await _send_chunk(writer, b"")
        return True

    def _fault(self, events: int) -> tuple[int, int | None, float]:
        """This call's (status, events before a cut or None, extra delay): drawn when faults are on."""
        if self.behaviour.faults is None:
            return self.behaviour.status, None, 0.0
        return self.behaviour.faults.draw(events)

    async def _respond(self, method: str, path: str, body: bytes) -> tuple[int, bytes, bool]:
        """(status, body, whether to cut the answer after half its body)."""
        if method == "GET" and path == "/stats":
            return 200, json.dumps({"calls": self.calls}).encode(), False
        behaviour = self.behaviour
        status, cut_after, delay = self._fault(1)
        if behaviour.delay_ms or delay:
            await asyncio.sleep(behaviour.delay_ms / 1000 + delay)
        self.calls += 1
        if status != 200:
            error = {"error": {"message": "fake upstream failure", "type": "server_error"}}
            return status, json.dumps(error).encode(), False
        request = json.loads(body or b"{}")
        return 200, json.dumps(_answer(path, request, behaviour)).encode(), cut_after is not None


async def _send_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()


def _parse_head(head: bytes) -> tuple[str, str, dict]:
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return method, path, headers


def _answer(path: str, request: dict, behaviour: Behaviour) -> dict:
    completion = behaviour.completion_tokens
    limit = request.get("max_tokens") or request.get("max_completion_tokens")
    if isinstance(limit, int) and limit > 0:
        completion = min(completion, limit)  # as real upstreams do: the answer stops at max_tokens
    usage = {
        "prompt_tokens": behaviour.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": behaviour.prompt_tokens + completion,
    }
    if path.endswith("/embeddings"):
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
            "model": request.get("model"),
            "usage": {"prompt_tokens": behaviour.prompt_tokens, "total_tokens": behaviour.prompt_tokens},
        }
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "fake reply"}, "finish_reason": "stop"}],
        "usage": usage,
    }


def _stream_events(request: dict, behaviour: Behaviour) -> list[bytes]:
    """role chunk, content chunks, finish chunk, the usage chunk when asked for, [DONE]."""
    answer = _answer("/chat/completions", request, behaviour)
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": answer["created"],
            "model": request.get("model")}  # fmt: skip
    pieces = [{"role": "assistant", "content": ""}] + [{"content": f"word{n} "} for n in range(behaviour.chunks)]
    chunks = [{**base, "choices": [{"index": 0, "delta": piece, "finish_reason": None}]} for piece in pieces]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if (request.get("stream_options") or {}).get("include_usage"):
        chunks.append({**base, "choices": [], "usage": answer["usage"]})
    return [b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks] + [b"data: [DONE]\n\n"]


def main() -> None:
    parser = argparse.ArgumentParser(description="Local fake OpenAI-compatible upstream")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=5, help="content chunks of a streamed answer")
    parser.add_argument("--chunk-delay-ms", type=int, default=0, help="pause between streamed chunks")
    parser.add_argument("--seconds", type=float, default=600, help="stop by itself after this long")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of calls answered 500 or 429")
    parser.add_argument("--cut-rate", type=float, default=0.0, help="share of answers cut mid-answer")
    parser.add_argument("--slow-rate", type=float, default=0.0, help="share of calls delayed 0.5-2 s more")
    parser.add_argument("--seed", type=int, default=None, help="seed of the faults drawn")
    args = parser.parse_args()
    behaviour = {"delay_ms": args.delay_ms, "chunks": args.chunks, "chunk_delay_ms": args.chunk_delay_ms}
    if args.error_rate or args.cut_rate or args.slow_rate:
        behaviour["faults"] = Faults(
            error_rate=args.error_rate, cut_rate=args.cut_rate, slow_rate=args.slow_rate, seed=args.seed
        )
    with FakeUpstream(port=args.port, **behaviour) as upstream:
        print(f"fake upstream on {upstream.url}", flush=True)
        time.sleep(args.seconds)


if __name__ == "__main__":
    main()
