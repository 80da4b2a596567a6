"""Streamed answers: open the upstream stream, relay its server-sent events as they arrive.

`open_stream` does everything that can fail before the first byte (connect, HTTP status), so a
failing deployment can still be retried; after that a `Stream` yields SSE bytes for the client
and, when it ends, says what the call used: the upstream's usage, or None when none came (the
client left, the upstream cut the stream) — the caller then estimates from `text` — and the
upstream's id of the answer (`response_id`).

Chat and text completions stream `data:` chunks ending in `data: [DONE]` (`openai_stream`); the
Responses API streams named events (`event: response.output_text.delta`) and ends with
`response.completed`, which carries the usage (`responses_stream`). That final event is held back
in `Stream.final` until the call is charged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator

from providers.base import HttpCall, Usage, post, usage_from_openai, usage_from_responses
from providers.http import Response, Upstreams

DONE = b"data: [DONE]\n\n"
# The Responses API's last event of an answer, each carrying the final `response` with its usage.
RESPONSE_ENDINGS = ("response.completed", "response.incomplete", "response.failed")
_ENDING_HEADS = tuple(f"event: {name}\n".encode() for name in RESPONSE_ENDINGS)


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
    """A stream of OpenAI `chat.completion.chunk` events for the client, with its usage at the end.

    Iterating it yields every event but the final one (`data: [DONE]`, or the Responses API's
    `response.completed` and its kin), which it keeps in `final` and stops: the caller charges
    the call first, and only then relays `final` (SPEC §4: never delivered complete unless charged).
    """

    def __init__(self, events: Iterable[bytes], close: Callable[[], None] = lambda: None):
        self._events = events
        self._close = close
        self.usage: Usage | None = None
        self.text = ""
        self.response_id: str | None = None
        self.final: bytes | None = None  # the final event, held back; None until it arrives

    def __iter__(self) -> Iterator[bytes]:
        for event in self._events:
            if event == DONE or event.startswith(_ENDING_HEADS):
                self.final = event
                return
            yield event

    def close(self) -> None:
        self._close()

    def saw(self, chunk: dict) -> None:
        """Keep what an estimate needs, the text of the answer so far (a chat chunk's `delta.content`,
        a text completion's `text`), and the answer's id."""
        if self.response_id is None and isinstance(chunk.get("id"), str) and chunk["id"]:
            self.response_id = chunk["id"]
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                self.text += delta["content"]
            elif isinstance(choice.get("text"), str):
                self.text += choice["text"]


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


def responses_stream(response: Response) -> Stream:
    """Relay a Responses API stream event by event, as it comes; its usage is in the final event."""
    stream = Stream((), response.close)

    def events() -> Iterator[bytes]:
        for name, data in sse_events(response):
            try:
                event = json.loads(data)
            except ValueError:
                event = None
            kind = name or (event.get("type") if isinstance(event, dict) else None)
            if isinstance(event, dict):
                saw_response_event(stream, kind, event)
            head = f"event: {name}\n".encode() if name else b""
            relayed = head + b"data: " + data.encode() + b"\n\n"
            if kind in RESPONSE_ENDINGS:
                stream.final = relayed
                return
            yield relayed

    stream._events = events()
    return stream


def saw_response_event(stream: Stream, kind: str | None, event: dict) -> None:
    """Keep the answer's id, its text so far and, from its final event, its usage."""
    answer = event.get("response")
    if isinstance(answer, dict) and isinstance(answer.get("id"), str) and stream.response_id is None:
        stream.response_id = answer["id"]
    if kind == "response.output_text.delta" and isinstance(event.get("delta"), str):
        stream.text += event["delta"]
    elif kind in RESPONSE_ENDINGS and isinstance(answer, dict) and isinstance(answer.get("usage"), dict):
        stream.usage = usage_from_responses(answer)


def wants_usage(body: dict) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
