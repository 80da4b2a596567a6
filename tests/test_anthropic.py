"""The Anthropic adapter: OpenAI chat bodies to Messages calls and Anthropic answers back.

The response and stream samples follow the shapes documented for the Messages API; the upstream
is faked only at the HTTP boundary (a local upstream server, `tests/local_upstream.py`).
"""

from __future__ import annotations

import json

import pytest

from config import Deployment
from providers.anthropic import AnthropicAdapter, AnthropicStreamTranslator, UntranslatableRequest
from providers.base import UpstreamBadResponse, UpstreamHTTPError, Usage

NOW = 1_700_000_000
MESSAGES_URL = "https://api.anthropic.com/v1/messages"
API_KEY = "sk-ant-test"
DEPLOYMENT = Deployment(
    id="d", model_name="claude", provider="anthropic", model="claude-3-5-sonnet-20241022", api_key=API_KEY
)
HELLO = [{"role": "user", "content": "Hello"}]
PNG_DATA = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}

TEXT_REPLY = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-sonnet-20241022",
    "content": [{"type": "text", "text": "Hi! My name is Claude."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 2095, "output_tokens": 503},
}
CACHED_REPLY = {
    "id": "msg_01EYmGVwRJLYXmHq9qyFzT5m",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-sonnet-20241022",
    "content": [{"type": "text", "text": "The book is about a boy who becomes a king."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 21,
        "cache_creation_input_tokens": 1200,
        "cache_read_input_tokens": 188086,
        "cache_creation": {"ephemeral_5m_input_tokens": 1200, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 393,
        "service_tier": "standard",
    },
}
TOOL_REPLY = {
    "id": "msg_01Aq9w938a90dw8q",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-sonnet-20241022",
    "content": [
        {"type": "text", "text": "I'll check the weather in San Francisco."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"location": "San Francisco, CA", "unit": "celsius"},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 384, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 92},
}
MAX_TOKENS_REPLY = {
    "id": "msg_01K8cSKB2Rr1vR9QnX4xmNNn",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-sonnet-20241022",
    "content": [{"type": "text", "text": "Once upon a time, in a land far"}],
    "stop_reason": "max_tokens",
    "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 10},
}
STOP_SEQUENCE_REPLY = {**MAX_TOKENS_REPLY, "stop_reason": "stop_sequence", "stop_sequence": "far"}


@pytest.fixture
def adapter():
    return AnthropicAdapter(clock=lambda: NOW + 0.75)


def payload(adapter, **body) -> dict:
    """The Messages body `adapter` sends for an OpenAI chat body."""
    return adapter.build_request(DEPLOYMENT, {"model": "claude", "messages": HELLO, **body}).json


# Requests


def test_request_goes_to_messages_endpoint_with_key_version_and_default_max_tokens(adapter):
    call = adapter.build_request(DEPLOYMENT, {"model": "claude", "messages": HELLO})

    assert call.url == MESSAGES_URL
    assert call.headers == {"x-api-key": API_KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    assert call.json == {
        "model": "claude-3-5-sonnet-20241022",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        "max_tokens": 4096,
    }


@pytest.mark.parametrize(
    "api_base",
    [None, "https://gw.example.test", "https://gw.example.test/", "https://gw.example.test/v1", MESSAGES_URL],
)
def test_custom_api_base_still_reaches_v1_messages(adapter, api_base):
    deployment = Deployment(id="d", model_name="claude", provider="anthropic", model="m", api_base=api_base)
    url = adapter.build_request(deployment, {"messages": HELLO}).url

    assert url == (MESSAGES_URL if api_base in (None, MESSAGES_URL) else "https://gw.example.test/v1/messages")


def test_system_messages_become_one_top_level_system(adapter):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "system", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "Hello"},
        {"role": "developer", "content": "Never mention the weather."},
    ]
    sent = payload(adapter, messages=messages)

    assert sent["system"] == "You are terse.\n\nAnswer in French.\n\nNever mention the weather."
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]


def test_system_part_with_cache_control_keeps_blocks_for_prompt_caching(adapter):
    cached = {"type": "text", "text": "A long book.", "cache_control": {"type": "ephemeral"}}
    content = [{"type": "text", "text": "You are terse."}, cached]
    sent = payload(adapter, messages=[{"role": "system", "content": content}, *HELLO])

    assert sent["system"] == content


def test_multi_part_user_content_becomes_text_and_image_blocks(adapter):
    content = [
        {"type": "text", "text": "What is in these images?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_DATA}"}},
        {"type": "image_url", "image_url": {"url": "https://example.test/cat.jpg", "detail": "high"}},
        {"type": "text", "text": ""},
    ]
    sent = payload(adapter, messages=[{"role": "user", "content": content}])

    assert sent["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in these images?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_DATA}},
                {"type": "image", "source": {"type": "url", "url": "https://example.test/cat.jpg"}},
            ],
        }
    ]


def test_consecutive_messages_of_one_role_are_merged(adapter):
    messages = [
        {"role": "user", "content": "First."},
        {"role": "user", "content": [{"type": "text", "text": "Second."}]},
        {"role": "assistant", "content": "One."},
        {"role": "assistant", "content": "Two."},
        {"role": "user", "content": "Third."},
    ]
    sent = payload(adapter, messages=messages)

    assert [(m["role"], [b["text"] for b in m["content"]]) for m in sent["messages"]] == [
        ("user", ["First.", "Second."]),
        ("assistant", ["One.", "Two."]),
        ("user", ["Third."]),
    ]


def test_tool_calls_and_tool_results_become_tool_use_and_one_user_turn_of_results(adapter):
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking both.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
        {"role": "user", "content": "And tomorrow?"},
    ]
    sent = payload(adapter, messages=messages, tools=[WEATHER_TOOL])

    assert sent["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]


def test_function_tools_become_anthropic_tools(adapter):
    bare = {"type": "function", "function": {"name": "now"}}
    sent = payload(adapter, tools=[WEATHER_TOOL, bare])

    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in sent


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "function": {"name": "get_weather"}}, None, {"type": "tool", "name": "get_weather"}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
    ],
)
def test_tool_choice_maps_to_anthropic_form(adapter, tool_choice, parallel, expected):
    extra = {"tool_choice": tool_choice, "parallel_tool_calls": parallel}
    sent = payload(adapter, tools=[WEATHER_TOOL], **{k: v for k, v in extra.items() if v is not None})

    assert sent["tool_choice"] == expected
    assert [tool["name"] for tool in sent["tools"]] == ["get_weather"]


def test_tool_choice_without_tools_is_dropped(adapter):
    sent = payload(adapter, tool_choice="required", parallel_tool_calls=False)

    assert "tools" not in sent and "tool_choice" not in sent


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({}, 4096),
        ({"max_tokens": None}, 4096),
        ({"max_tokens": 100}, 100),
        ({"max_completion_tokens": 200}, 200),
        ({"max_tokens": 100, "max_completion_tokens": 200}, 200),
    ],
)
def test_max_tokens_comes_from_either_openai_name_or_defaults(adapter, limits, expected):
    assert payload(adapter, **limits)["max_tokens"] == expected


@pytest.mark.parametrize(
    ("stop", "expected"),
    [("END", ["END"]), (["END", "\n\nHuman:"], ["END", "\n\nHuman:"]), (None, None), ([], None)],
)
def test_stop_becomes_stop_sequences(adapter, stop, expected):
    assert payload(adapter, stop=stop).get("stop_sequences") == expected


def test_parameters_anthropic_rejects_are_dropped_and_user_becomes_metadata(adapter):
    sent = payload(
        adapter,
        temperature=0.2,
        top_p=0.9,
        stream=True,
        user="customer-42",
        n=1,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        logit_bias={"50256": -100},
        seed=7,
        response_format={"type": "json_object"},
        stream_options={"include_usage": True},
        logprobs=False,
        metadata={"tag": "x"},
    )

    assert sent == {
        "model": "claude-3-5-sonnet-20241022",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        "max_tokens": 4096,
        "temperature": 0.2,
        "top_p": 0.9,
        "stream": True,
        "metadata": {"user_id": "customer-42"},
    }


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "tool", "content": "18C"}]}, "tool_call_id"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "input_audio"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}, "URL"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "data:image/png,abc"}]}]},
            "base64",
        ),
        (
            {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": "https://x.test/a.png"}]}]},
            "image_url",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{"}}]}
                ]
            },
            "not valid JSON",
        ),
        ({"messages": HELLO, "tools": [{"type": "code_interpreter"}]}, "tools[0]"),
        ({"messages": HELLO, "tools": [WEATHER_TOOL], "tool_choice": "sometimes"}, "tool_choice"),
        ({"messages": HELLO, "max_tokens": 0}, "max_tokens"),
        ({"messages": HELLO, "stop": 3}, "stop"),
        ({"messages": "Hello"}, "messages"),
    ],
)
def test_untranslatable_request_is_a_client_error_naming_the_problem(adapter, body, mentions):
    with pytest.raises(UntranslatableRequest) as raised:
        adapter.build_request(DEPLOYMENT, body)

    assert raised.value.client_status == 400
    assert raised.value.type == "invalid_request_error"
    assert mentions in raised.value.message


def test_only_chat_completions_can_be_served(adapter):
    with pytest.raises(UntranslatableRequest, match="chat completions only"):
        adapter.build_request(DEPLOYMENT, {"input": "text"}, "embeddings")


# Responses


def test_text_reply_becomes_chat_completion(adapter):
    reply = adapter.parse_response(DEPLOYMENT, TEXT_REPLY, b"raw bytes")

    assert reply.raw is None
    assert reply.body == {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "object": "chat.completion",
        "created": NOW,
        "model": "claude-3-5-sonnet-20241022",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hi! My name is Claude."}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": 2095,
            "completion_tokens": 503,
            "total_tokens": 2598,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }
    assert reply.usage == Usage(prompt_tokens=2095, completion_tokens=503)


def test_tool_use_reply_becomes_tool_calls_with_json_arguments(adapter):
    choice = adapter.parse_response(DEPLOYMENT, TOOL_REPLY).body["choices"][0]

    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I'll check the weather in San Francisco."
    [call] = choice["message"]["tool_calls"]
    assert call["id"] == "toolu_01A09q90qw90lq917835lq9"
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"location": "San Francisco, CA", "unit": "celsius"}


def test_reply_without_text_has_null_content(adapter):
    only_tool = {**TOOL_REPLY, "content": TOOL_REPLY["content"][1:]}
    message = adapter.parse_response(DEPLOYMENT, only_tool).body["choices"][0]["message"]

    assert message["content"] is None
    assert len(message["tool_calls"]) == 1


@pytest.mark.parametrize(
    ("sample", "finish_reason"),
    [
        (TEXT_REPLY, "stop"),
        (STOP_SEQUENCE_REPLY, "stop"),
        (MAX_TOKENS_REPLY, "length"),
        (TOOL_REPLY, "tool_calls"),
        ({**TEXT_REPLY, "stop_reason": "refusal"}, "content_filter"),
    ],
)
def test_stop_reason_maps_to_finish_reason(adapter, sample, finish_reason):
    assert adapter.parse_response(DEPLOYMENT, sample).body["choices"][0]["finish_reason"] == finish_reason


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (TEXT_REPLY, Usage(prompt_tokens=2095, completion_tokens=503)),
        (TOOL_REPLY, Usage(prompt_tokens=384, completion_tokens=92)),
        (
            CACHED_REPLY,
            Usage(
                prompt_tokens=21 + 1200 + 188086,
                completion_tokens=393,
                cached_tokens=188086,
                cache_creation_tokens=1200,
            ),
        ),
        ({**TEXT_REPLY, "usage": None}, Usage()),
    ],
)
def test_usage_counts_cache_reads_and_writes_inside_prompt_tokens(adapter, sample, expected):
    reply = adapter.parse_response(DEPLOYMENT, sample)

    assert reply.usage == expected
    assert reply.body["usage"] == {
        "prompt_tokens": expected.prompt_tokens,
        "completion_tokens": expected.completion_tokens,
        "total_tokens": expected.prompt_tokens + expected.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": expected.cached_tokens},
    }


def test_cached_reply_is_billable_once_per_token(adapter):
    usage = adapter.parse_response(DEPLOYMENT, CACHED_REPLY).usage
    raw = CACHED_REPLY["usage"]

    uncached = usage.prompt_tokens - usage.cached_tokens - usage.cache_creation_tokens
    assert uncached == raw["input_tokens"]
    assert usage.cached_tokens == raw["cache_read_input_tokens"]
    assert usage.cache_creation_tokens == raw["cache_creation_input_tokens"]


@pytest.mark.parametrize("data", [{"type": "error", "error": {}}, {"type": "message"}, {"content": "text"}])
def test_body_that_is_not_a_message_is_a_bad_response(adapter, data):
    with pytest.raises(UpstreamBadResponse, match="'claude'"):
        adapter.parse_response(DEPLOYMENT, data)


# complete() over HTTP


def test_complete_posts_translated_body_with_anthropic_headers(adapter, upstream):
    upstream.post(MESSAGES_URL, json=CACHED_REPLY)
    body = {"model": "claude", "messages": [{"role": "system", "content": "Be brief."}, *HELLO], "user": "u1"}
    reply = adapter.complete(upstream.transport(), DEPLOYMENT, body)

    sent = upstream.calls[0].request
    assert sent.url == MESSAGES_URL
    assert sent.headers["x-api-key"] == API_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["content-type"] == "application/json"
    assert "Authorization" not in sent.headers
    assert json.loads(sent.body) == {
        "model": "claude-3-5-sonnet-20241022",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        "max_tokens": 4096,
        "system": "Be brief.",
        "metadata": {"user_id": "u1"},
    }
    assert reply.body["choices"][0]["message"]["content"] == "The book is about a boy who becomes a king."
    assert reply.usage.prompt_tokens == 21 + 1200 + 188086
    assert reply.raw is None


@pytest.mark.parametrize(
    ("status", "error_type", "message", "client_status", "client_type"),
    [
        (400, "invalid_request_error", "max_tokens: 300000 > 8192, which is the maximum", 400, "invalid_request_error"),
        (401, "authentication_error", "invalid x-api-key", 401, "authentication_error"),
        (429, "rate_limit_error", "Number of request tokens has exceeded your rate limit", 429, "rate_limit_error"),
        (500, "api_error", "Internal server error", 502, "upstream_error"),
        (529, "overloaded_error", "Overloaded", 502, "upstream_error"),
    ],
)
def test_anthropic_error_body_raises_upstream_error_with_its_message(
    adapter, upstream, status, error_type, message, client_status, client_type
):
    error = {"type": "error", "error": {"type": error_type, "message": message}, "request_id": "req_011CSHoEeqs5C35K"}
    upstream.post(MESSAGES_URL, status=status, json=error)

    with pytest.raises(UpstreamHTTPError) as raised:
        adapter.complete(upstream.transport(), DEPLOYMENT, {"model": "claude", "messages": HELLO})

    assert raised.value.status == status
    assert raised.value.client_status == client_status
    assert raised.value.type == client_type
    assert raised.value.message == f"Upstream 'claude' (deployment d) returned HTTP {status}: {message}"
    assert API_KEY not in raised.value.message and "anthropic.com" not in raised.value.message


# Streaming

TEXT_STREAM = """
event: message_start
data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", \
"role": "assistant", "content": [], "model": "claude-3-5-sonnet-20241022", "stop_reason": null, "stop_sequence": null, \
"usage": {"input_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1800, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, \
"usage": {"output_tokens": 15}}

event: message_stop
data: {"type": "message_stop"}
"""

TOOL_STREAM = """
event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant",\
"model":"claude-3-haiku-20240307","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],\
"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me check."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6",\
"name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",\
"partial_json":" \\"San Francisco, CA\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}
"""


def sse_events(text: str) -> list[tuple[str, dict]]:
    """(event name, decoded data) of each server-sent event in `text`."""
    events = []
    for frame in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def translate(events: list[tuple[str, dict]]) -> tuple[AnthropicStreamTranslator, list[dict]]:
    translator = AnthropicStreamTranslator(DEPLOYMENT, created=NOW)
    return translator, [chunk for name, data in events for chunk in translator.feed(name, data)]


def test_text_stream_becomes_role_content_and_finish_chunks():
    translator, chunks = translate(sse_events(TEXT_STREAM))

    assert [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks] == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Hello"}, None),
        ({"content": "!"}, None),
        ({}, "stop"),
    ]
    for chunk in chunks:
        assert chunk["id"] == "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["created"] == NOW
        assert chunk["model"] == "claude-3-5-sonnet-20241022"
    assert translator.finish_reason == "stop"
    assert translator.usage == Usage(prompt_tokens=25 + 1800, completion_tokens=15, cached_tokens=1800)


def test_tool_stream_becomes_tool_call_chunks_with_argument_fragments():
    translator, chunks = translate(sse_events(TOOL_STREAM))
    deltas = [c["choices"][0]["delta"] for c in chunks]

    assert deltas[:3] == [
        {"role": "assistant", "content": ""},
        {"content": "Let me check."},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
    ]
    fragments = [d["tool_calls"][0]["function"]["arguments"] for d in deltas[3:-1]]
    assert all(set(d["tool_calls"][0]) == {"index", "function"} for d in deltas[3:-1])
    assert json.loads("".join(fragments)) == {"location": "San Francisco, CA"}
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    assert translator.usage == Usage(prompt_tokens=472, completion_tokens=89)


def test_second_tool_in_stream_gets_the_next_tool_call_index():
    translator = AnthropicStreamTranslator(DEPLOYMENT, created=NOW)
    for index, tool_id in ((1, "toolu_a"), (2, "toolu_b")):
        block = {"type": "tool_use", "id": tool_id, "name": "get_weather", "input": {}}
        translator.feed("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
    delta = {"type": "input_json_delta", "partial_json": "{}"}
    [chunk] = translator.feed("content_block_delta", {"type": "content_block_delta", "index": 2, "delta": delta})

    assert chunk["choices"][0]["delta"] == {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}


def test_cumulative_message_delta_usage_is_not_counted_twice():
    start = {"id": "msg_1", "model": "claude-3-5-sonnet-20241022"}
    start["usage"] = {"input_tokens": 10, "cache_creation_input_tokens": 500, "output_tokens": 1}
    final = {"input_tokens": 10, "cache_creation_input_tokens": 500, "cache_read_input_tokens": 0, "output_tokens": 42}
    translator, _ = translate(
        [
            ("message_start", {"type": "message_start", "message": start}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": final}),
        ]
    )

    assert translator.usage == Usage(prompt_tokens=510, completion_tokens=42, cache_creation_tokens=500)
    assert translator.finish_reason == "length"


def test_usage_chunk_is_openai_usage_only_chunk():
    translator, _ = translate(sse_events(TEXT_STREAM))

    assert translator.usage_chunk() == {
        "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
        "object": "chat.completion.chunk",
        "created": NOW,
        "model": "claude-3-5-sonnet-20241022",
        "choices": [],
        "usage": {
            "prompt_tokens": 1825,
            "completion_tokens": 15,
            "total_tokens": 1840,
            "prompt_tokens_details": {"cached_tokens": 1800},
        },
    }


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("ping", {"type": "ping"}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_stop", {"type": "message_stop"}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking"}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm"}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "signature_delta", "signature": "EqQB"}}),
        ("some_future_event", {"type": "some_future_event"}),
    ],
)
def test_events_without_chat_form_yield_no_chunks(event, data):
    assert AnthropicStreamTranslator(DEPLOYMENT).feed(event, data) == []


def test_event_name_may_come_from_the_data_type():
    [chunk] = AnthropicStreamTranslator(DEPLOYMENT).feed("", {"type": "message_start", "message": {"id": "msg_2"}})

    assert chunk["id"] == "msg_2"
    assert chunk["model"] == "claude-3-5-sonnet-20241022"


@pytest.mark.parametrize(
    ("error_type", "message", "status", "client_status"),
    [
        ("overloaded_error", "Overloaded", 529, 502),
        ("api_error", "Internal server error", 500, 502),
        ("invalid_request_error", "prompt is too long", 400, 400),
    ],
)
def test_error_event_raises_upstream_error_with_anthropic_message(error_type, message, status, client_status):
    translator = AnthropicStreamTranslator(DEPLOYMENT)
    with pytest.raises(UpstreamHTTPError) as raised:
        translator.feed("error", {"type": "error", "error": {"type": error_type, "message": message}})

    assert raised.value.status == status
    assert raised.value.client_status == client_status
    assert message in raised.value.message


def test_adapter_stream_translator_is_stamped_with_the_adapter_clock(adapter):
    [chunk] = adapter.stream_translator(DEPLOYMENT).feed("message_start", {"message": {"id": "msg_3"}})

    assert chunk["created"] == NOW
