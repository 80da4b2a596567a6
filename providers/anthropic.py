"""Anthropic's Messages API behind the OpenAI chat API: requests, replies and stream events translated.

Usage: Anthropic's `input_tokens` leaves out the tokens read from and written to the prompt cache,
which it reports apart. Tollgate's `Usage.prompt_tokens` counts all three, with the cache ones
named again in `cached_tokens` / `cache_creation_tokens`, so pricing bills each token once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from providers.base import (
    HttpCall,
    NotForThisProvider,
    Reply,
    UpstreamBadResponse,
    UpstreamHTTPError,
    Usage,
    label,
    openai_usage,
    send,
)
from providers.http import Upstreams
from providers.streaming import DONE, Stream, open_stream, sse, sse_events, wants_usage

DEFAULT_BASE = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
# OpenAI sampling parameters Anthropic takes under the same name (`top_k` is Anthropic's own).
SAMPLING_PARAMS = ("temperature", "top_p", "top_k")
# Every other stop reason (end_turn, stop_sequence, pause_turn) is an ordinary "stop".
FINISH_REASONS = {"max_tokens": "length", "tool_use": "tool_calls", "refusal": "content_filter"}
# The status of each error type Anthropic can send inside a stream; any other is an upstream 500.
STREAM_ERROR_STATUS = {"invalid_request_error": 400, "rate_limit_error": 429, "overloaded_error": 529}


class UntranslatableRequest(NotForThisProvider):
    """The OpenAI body has something the Messages API cannot express."""


class AnthropicAdapter:
    """Serves OpenAI chat bodies from Anthropic's Messages API."""

    def __init__(self, default_base: str = DEFAULT_BASE, clock: Callable[[], float] = time.time):
        self.default_base = default_base
        self.clock = clock

    def url(self, deployment) -> str:
        """`{base}/v1/messages`, also when `api_base` already ends in `/v1` or `/v1/messages`."""
        base = (deployment.api_base or self.default_base).rstrip("/")
        if base.endswith("/v1/messages"):
            return base
        return f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"

    def headers(self, deployment) -> dict:
        key = {"x-api-key": deployment.api_key} if deployment.api_key else {}
        return {**key, "anthropic-version": API_VERSION, "content-type": "application/json"}

    def build_request(self, deployment, body: dict, path: str = "chat/completions") -> HttpCall:
        """The Messages call for an OpenAI chat `body`; pure."""
        if path != "chat/completions":
            raise UntranslatableRequest(f"Model '{deployment.model_name}' serves chat completions only, not {path}")
        system, messages = translate_messages(body.get("messages"))
        payload: dict[str, Any] = {"model": deployment.model, "messages": messages, "max_tokens": _max_tokens(body)}
        if system:
            payload["system"] = system
        payload.update({name: body[name] for name in SAMPLING_PARAMS if body.get(name) is not None})
        stop = _stop_sequences(body.get("stop"))
        if stop:
            payload["stop_sequences"] = stop
        payload.update(_tooling(body))
        if isinstance(body.get("user"), str) and body["user"]:
            payload["metadata"] = {"user_id": body["user"]}
        if body.get("stream"):
            payload["stream"] = True
        return HttpCall(url=self.url(deployment), headers=self.headers(deployment), json=payload)

    def parse_response(self, deployment, data: dict, raw: bytes | None = None) -> Reply:
        """The `chat.completion` for an Anthropic message, with normalized usage; pure."""
        content = data.get("content")
        if not isinstance(content, list) or data.get("type", "message") != "message":
            raise UpstreamBadResponse(f"Upstream {label(deployment)} returned a body that is not a message")
        blocks = [block for block in content if isinstance(block, dict)]
        texts = [str(block.get("text") or "") for block in blocks if block.get("type") == "text"]
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
        tool_calls = [_tool_call(block) for block in blocks if block.get("type") == "tool_use"]
        if tool_calls:
            message["tool_calls"] = tool_calls
        usage = usage_from_anthropic(data.get("usage"))
        reply = {
            "id": data.get("id"),
            "object": "chat.completion",
            "created": int(self.clock()),
            "model": data.get("model") or deployment.model,
            "choices": [{"index": 0, "message": message, "finish_reason": _finish(data.get("stop_reason"))}],
            "usage": openai_usage(usage),
        }
        return Reply(body=reply, usage=usage)

    def complete(self, http: Upstreams, deployment, body: dict, path: str = "chat/completions") -> Reply:
        """One non-streaming call: build, send, translate the answer."""
        call = self.build_request(deployment, body, path)
        data, _ = send(http, call, deployment.timeout, label=label(deployment))
        return self.parse_response(deployment, data)

    def stream(self, http: Upstreams, deployment, body: dict, path: str = "chat/completions") -> Stream:
        """Open a Messages stream and translate its events into OpenAI chunks as they arrive."""
        call = self.build_request(deployment, {**body, "stream": True}, path)
        response = open_stream(http, call, deployment.timeout, label=label(deployment))
        translator = self.stream_translator(deployment)
        stream = Stream((), response.close)

        def events():
            for event, data in sse_events(response):
                try:
                    payload = json.loads(data)
                except ValueError:
                    continue
                for chunk in translator.feed(event or payload.get("type", ""), payload):
                    stream.saw(chunk)
                    yield sse(chunk)
                if (event or payload.get("type")) == "message_stop":
                    stream.usage = translator.usage
                    if wants_usage(body):
                        yield sse(translator.usage_chunk())
                    yield DONE
                    return

        stream._events = events()
        return stream

    def stream_translator(self, deployment) -> AnthropicStreamTranslator:
        """A fresh translator for one streamed answer of `deployment`."""
        return AnthropicStreamTranslator(deployment, created=int(self.clock()))


def translate_messages(messages: Any) -> tuple[str | list[dict], list[dict]]:
    """The `system` and the alternating `messages` of a list of OpenAI chat messages."""
    if not isinstance(messages, list):
        raise UntranslatableRequest("`messages` must be a list of chat messages")
    system: list[dict] = []
    turns: list[dict] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise UntranslatableRequest(f"{where} must be an object")
        if message.get("role") in ("system", "developer"):
            system.extend(_content_blocks(message.get("content"), where, images=False))
            continue
        role, blocks = _turn(message, where)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    # Blocks carrying `cache_control` must stay blocks for prompt caching; else one string.
    if any("cache_control" in block for block in system):
        return system, turns
    return "\n\n".join(block["text"] for block in system), turns


def _turn(message: dict, where: str) -> tuple[str, list[dict]]:
    role = message.get("role")
    if role == "user":
        return "user", _content_blocks(message.get("content"), where)
    if role == "assistant":
        blocks = _content_blocks(message.get("content"), where, images=False)
        calls = message.get("tool_calls") or []
        return "assistant", blocks + [_tool_use(call, f"{where}.tool_calls[{i}]") for i, call in enumerate(calls)]
    if role == "tool":
        return "user", [_tool_result(message, where)]
    raise UntranslatableRequest(f"{where}.role '{role}' is not supported for Anthropic models")


def _content_blocks(content: Any, where: str, images: bool = True) -> list[dict]:
    """Anthropic content blocks for an OpenAI `content` (a string or a list of parts)."""
    if content is None:
        return []
    if isinstance(content, str):
        # Anthropic refuses empty text blocks.
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise UntranslatableRequest(f"{where}.content must be a string or a list of parts")
    blocks = []
    for index, part in enumerate(content):
        part_where = f"{where}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            if not part["text"]:
                continue
            block: dict[str, Any] = {"type": "text", "text": part["text"]}
        elif kind == "image_url" and images:
            block = _image_block(part.get("image_url"), part_where)
        else:
            raise UntranslatableRequest(f"{part_where}: part type {kind!r} is not supported here for Anthropic models")
        if "cache_control" in part:
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def _image_block(image: Any, where: str) -> dict:
    """A data URL becomes a base64 source, an http(s) URL a url source."""
    url = image.get("url") if isinstance(image, dict) else image
    if isinstance(url, str) and url.startswith("data:"):
        header, comma, data = url[len("data:") :].partition(",")
        if comma and header.endswith(";base64"):
            media_type = header.split(";", 1)[0]
            return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
        raise UntranslatableRequest(f"{where}: image data URLs must be base64-encoded")
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise UntranslatableRequest(f"{where}: image_url.url must be a data: or http(s) URL")


def _tool_use(call: Any, where: str) -> dict:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not call.get("id"):
        raise UntranslatableRequest(f"{where} must have an id and a function with a name")
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            raise UntranslatableRequest(f"{where}.function.arguments is not valid JSON") from None
    if not isinstance(arguments, dict | None):
        raise UntranslatableRequest(f"{where}.function.arguments must encode a JSON object")
    return {"type": "tool_use", "id": call["id"], "name": function["name"], "input": arguments or {}}


def _tool_result(message: dict, where: str) -> dict:
    tool_call_id = message.get("tool_call_id")
    if not isinstance(tool_call_id, str) or not tool_call_id:
        raise UntranslatableRequest(f"{where}.tool_call_id is required for a tool message")
    content = message.get("content")
    content = content if isinstance(content, str) else _content_blocks(content, where)
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_call_id}
    return {**result, "content": content} if content else result


def _max_tokens(body: dict) -> int:
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    value = DEFAULT_MAX_TOKENS if body.get(name) is None else body[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UntranslatableRequest(f"`{name}` must be a positive whole number")
    return value


def _stop_sequences(stop: Any) -> list[str]:
    sequences = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(sequences, list) or not all(isinstance(item, str) for item in sequences):
        raise UntranslatableRequest("`stop` must be a string or a list of strings")
    return [item for item in sequences if item]


def _tooling(body: dict) -> dict:
    """`tools` and `tool_choice` in Anthropic's form; nothing when the body has no tools."""
    tools = body.get("tools")
    if not tools:
        return {}
    payload: dict[str, Any] = {"tools": [_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]}
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and (choice or {}).get("type") != "none":
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice:
        payload["tool_choice"] = choice
    return payload


def _tool(tool: Any, where: str) -> dict:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type", "function") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise UntranslatableRequest(f"{where}: only function tools with a name are supported for Anthropic models")
    translated = {"name": function["name"]}
    if function.get("description"):
        translated["description"] = function["description"]
    translated["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return translated


def _tool_choice(choice: Any) -> dict | None:
    """OpenAI's tool_choice in Anthropic's form; `none` keeps the tools but forbids calling them."""
    if choice is None:
        return None
    simple = {"auto": "auto", "required": "any", "none": "none"}
    if isinstance(choice, str) and choice in simple:
        return {"type": simple[choice]}
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function") if isinstance(choice.get("function"), dict) else choice
        if isinstance(function.get("name"), str):
            return {"type": "tool", "name": function["name"]}
    raise UntranslatableRequest("`tool_choice` must be 'auto', 'required', 'none' or a named function")


def _tool_call(block: dict) -> dict:
    arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
    return {"id": block.get("id"), "type": "function", "function": {"name": block.get("name"), "arguments": arguments}}


def usage_from_anthropic(usage: Any) -> Usage:
    """Normalize Anthropic's usage: prompt tokens include the cache reads and writes."""
    usage = usage if isinstance(usage, dict) else {}
    cache_write = _tokens(usage.get("cache_creation_input_tokens"))
    cache_read = _tokens(usage.get("cache_read_input_tokens"))
    return Usage(
        prompt_tokens=_tokens(usage.get("input_tokens")) + cache_write + cache_read,
        completion_tokens=_tokens(usage.get("output_tokens")),
        cached_tokens=cache_read,
        cache_creation_tokens=cache_write,
    )


def _finish(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop")


def _tokens(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class AnthropicStreamTranslator:
    """Anthropic's SSE events → OpenAI `chat.completion.chunk` dicts, keeping the usage they report.

    Usage counts are cumulative (a `message_delta` may restate input and cache counts): the largest
    wins, and `usage` is final after `message_delta`. An `error` event raises `UpstreamHTTPError`.
    """

    _EVENTS = ("message_start", "content_block_start", "content_block_delta", "message_delta", "error")
    _USAGE_KEYS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")

    def __init__(self, deployment, created: int | None = None):
        self.label = label(deployment)
        self.id = ""
        self.model = deployment.model
        self.created = int(time.time()) if created is None else created
        self.finish_reason: str | None = None
        self._counts: dict[str, int] = {}
        self._tool_index: dict[Any, int] = {}  # Anthropic content-block index → OpenAI tool_calls index

    def feed(self, event_type: str, data: dict) -> list[dict]:
        """The chunks for one event (often none: `ping`, `content_block_stop`, `message_stop`)."""
        event_type = event_type or data.get("type")
        return getattr(self, f"_on_{event_type}")(data) if event_type in self._EVENTS else []

    @property
    def usage(self) -> Usage:
        """The normalized usage reported so far."""
        return usage_from_anthropic(self._counts)

    def usage_chunk(self) -> dict:
        """The usage-only chunk OpenAI sends last when `stream_options.include_usage` is set."""
        return {**self._chunk(None), "usage": openai_usage(self.usage)}

    def _chunk(self, delta: dict | None, finish: str | None = None) -> dict:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        envelope = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
        return {**envelope, "choices": choices}

    def _add_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for key in self._USAGE_KEYS:
            self._counts[key] = max(self._counts.get(key, 0), _tokens(usage.get(key)))

    def _on_message_start(self, data: dict) -> list[dict]:
        message = data.get("message") if isinstance(data.get("message"), dict) else {}
        self.id = message.get("id") or self.id
        self.model = message.get("model") or self.model
        self._add_usage(message.get("usage"))
        return [self._chunk({"role": "assistant", "content": ""})]

    def _on_content_block_start(self, data: dict) -> list[dict]:
        block = data.get("content_block") if isinstance(data.get("content_block"), dict) else {}
        if block.get("type") == "tool_use":
            position = len(self._tool_index)
            self._tool_index[data.get("index")] = position
            function = {"name": block.get("name"), "arguments": ""}
            call = {"index": position, "id": block.get("id"), "type": "function", "function": function}
            return [self._chunk({"tool_calls": [call]})]
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        return []

    def _on_content_block_delta(self, data: dict) -> list[dict]:
        delta = data.get("delta") if isinstance(data.get("delta"), dict) else {}
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        position = self._tool_index.get(data.get("index"))
        if delta.get("type") == "input_json_delta" and delta.get("partial_json") and position is not None:
            call = {"index": position, "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        return []  # thinking, signature and citation deltas have no chat-completions form

    def _on_message_delta(self, data: dict) -> list[dict]:
        self._add_usage(data.get("usage"))
        delta = data.get("delta") if isinstance(data.get("delta"), dict) else {}
        self.finish_reason = _finish(delta.get("stop_reason"))
        return [self._chunk({}, self.finish_reason)]

    def _on_error(self, data: dict) -> list[dict]:
        error = data.get("error") if isinstance(data.get("error"), dict) else {}
        error_type = error.get("type") if isinstance(error.get("type"), str) else "api_error"
        message = str(error.get("message") or error_type)
        status = STREAM_ERROR_STATUS.get(error_type, 500)
        if status >= 500:
            raise UpstreamHTTPError(status, f"Upstream {self.label} failed mid-stream ({error_type}): {message}")
        raise UpstreamHTTPError(status, message, error_type)
