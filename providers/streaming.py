"""Streamed answers: open the upstream stream, relay its server-sent events as they arrive.

`open_stream` does everything that can fail before the first byte (connect, HTTP status), so a
failing deployment can still be retried; after that a `Stream` yields SSE bytes for the client
and, when it ends, says what the call used: the upstream's usage, or None when none came (the
client left, the upstream cut the stream) — the caller then estimates from `text`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator

from providers.base import HttpCall, Usage, post, usage_from_openai
from providers.http import Response, Upstreams

DONE = b"data: [DONE]\n\n"


def open_stream(http: Upstreams, call: HttpCall, timeout: float, label: str) -> Response:
    """POST `call` for a stream; the response once its status says the stream has begun."""
    return post(http, call, timeout, label, stream=True)


def sse_events(response: Response) -> Iterator[tuple[str | None, str]]:
    """(event name, data) of each server-sent event, as soon as its blank line arrives."""
    buffer = b""
    event, data = None, []
    for piece in response.iter_content():
        buffer += piece
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            line = line.rstrip(b"\r").decode("utf-8", "replace")
            if not line:
                if data:
                    yield event, "\n".join(data)
                event, data = None, []
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
            elif line.startswith("event:"):
                event = line[6:].strip()
    if data:
        yield event, "\n".join(data)


def sse(chunk: dict) -> bytes:
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


class Stream:
    """A stream of OpenAI `chat.completion.chunk` events for the client, with its usage at the end."""

    def __init__(self, events: Iterable[bytes], close: Callable[[], None] = lambda: None):
        self._events = events
        self._close = close
        self.usage: Usage | None = None
        self.text = ""

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._events)

    def close(self) -> None:
        self._close()

    def saw(self, chunk: dict) -> None:
        """Keep what an estimate needs: the text of the answer so far."""
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                self.text += delta["content"]


def openai_stream(response: Response, client_wants_usage: bool) -> Stream:
    """Relay an OpenAI-style stream unchanged, minus the usage chunk the client did not ask for."""
    stream = Stream((), response.close)

    def events() -> Iterator[bytes]:
        for _, data in sse_events(response):
            if data.strip() == "[DONE]":
                yield DONE
                return
            try:
                chunk = json.loads(data)
            except ValueError:
                continue
            if not isinstance(chunk, dict):
                continue
            stream.saw(chunk)
            if chunk.get("usage"):
                stream.usage = usage_from_openai(chunk)
                if not client_wants_usage:
                    if not chunk.get("choices"):
                        continue
                    chunk = {key: value for key, value in chunk.items() if key != "usage"}
                    yield sse(chunk)
                    continue
            yield b"data: " + data.encode() + b"\n\n"

    stream._events = events()
    return stream


def wants_usage(body: dict) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
