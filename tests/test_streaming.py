"""Streaming: chunks relayed as they arrive, usage asked for and stripped, every ending charged."""

from __future__ import annotations

import json
import threading
from decimal import Decimal

import pytest

from tests.fake_upstream import FakeUpstream
from tests.helpers import AUTH, PRICED, chat_body, sql_rows


@pytest.fixture
def upstream_app(make_app):
    """An app whose `gpt-test` is a real local upstream; yields (client, upstream, store)."""
    started = []

    def make(**behaviour):
        upstream = FakeUpstream(**behaviour)
        upstream.start()
        started.append(upstream)
        models = [
            {
                "model_name": "gpt-test",
                "litellm_params": {"model": "openai/gpt-test", "api_base": upstream.url, "api_key": "none", **PRICED},
            }
        ]
        app = make_app(model_list=models)
        return app.test_client(), upstream, app.extensions["tollgate"].store

    yield make
    for upstream in started:
        upstream.stop()


def events_of(data: bytes) -> list:
    out = []
    for block in data.decode().split("\n\n"):
        if block.startswith("data: "):
            payload = block[len("data: ") :]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def test_stream_is_relayed_and_charged_from_the_upstream_usage(upstream_app):
    client, _, store = upstream_app()
    response = client.post("/chat/completions", json=chat_body(stream=True, user="streamer"), headers=AUTH)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    events = events_of(response.data)
    assert events[-1] == "[DONE]"
    assert all("usage" not in event for event in events[:-1]), "usage chunk must be stripped when not asked for"
    assert (
        "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"])
        == "word0 word1 word2 word3 word4 "
    )
    [row] = store.ledger.spend_logs("streamer")
    assert (row.prompt_tokens, row.completion_tokens, row.estimated) == (20, 20, False)
    assert row.cost_units == 60_000_000_000


def test_usage_chunk_is_kept_when_the_client_asks(upstream_app):
    client, _, _ = upstream_app()
    body = chat_body(stream=True, stream_options={"include_usage": True})
    events = events_of(client.post("/chat/completions", json=body, headers=AUTH).data)
    assert events[-2]["usage"] == {"prompt_tokens": 20, "completion_tokens": 20, "total_tokens": 40}
    assert events[-2]["choices"] == []


def test_streamed_and_plain_calls_with_the_same_usage_cost_the_same(upstream_app):
    client, _, store = upstream_app()
    plain = client.post("/chat/completions", json=chat_body(user="plain"), headers=AUTH)
    client.post("/chat/completions", json=chat_body(user="streamed", stream=True), headers=AUTH).get_data()
    assert store.admin.get_customer("plain").spend_units == store.admin.get_customer("streamed").spend_units
    assert Decimal(plain.headers["x-litellm-response-cost"]) == Decimal("0.06")


def test_first_chunk_reaches_the_client_while_the_upstream_holds_the_rest(upstream_app):
    release = threading.Event()
    client, _, store = upstream_app(hold_after_first=release)
    response = client.post("/chat/completions", json=chat_body(stream=True, user="early"), headers=AUTH, buffered=False)
    chunks = iter(response.response)
    first = next(chunks)
    assert b'"role": "assistant"' in first
    assert not release.is_set()
    release.set()
    rest = b"".join(chunks)
    assert rest.endswith(b"data: [DONE]\n\n")
    response.close()
    assert store.ledger.spend_logs("early")[0].estimated is False


def test_client_that_leaves_after_two_chunks_is_charged_an_estimate(upstream_app):
    client, _, store = upstream_app(chunk_delay_ms=20)
    response = client.post(
        "/chat/completions", json=chat_body(stream=True, user="leaver"), headers=AUTH, buffered=False
    )
    chunks = iter(response.response)
    next(chunks), next(chunks)
    response.close()
    [row] = store.ledger.spend_logs("leaver")
    assert row.estimated is True and row.status == "success"
    assert row.prompt_tokens > 0 and row.cost_units > 0
    again = client.post("/chat/completions", json=chat_body(user="after-leaver"), headers=AUTH)
    assert again.status_code == 200


def test_upstream_that_cuts_the_stream_is_charged_an_estimate(upstream_app):
    client, _, store = upstream_app(cut_after=3)
    response = client.post("/chat/completions", json=chat_body(stream=True, user="cut"), headers=AUTH)
    events = events_of(response.data)
    assert "error" in events[-1]
    [row] = store.ledger.spend_logs("cut")
    assert row.estimated is True and row.completion_tokens >= 1


def test_stream_error_before_the_first_byte_is_an_ordinary_error(upstream_app):
    from tests.helpers import assert_openai_error

    client, _, store = upstream_app(status=500)
    response = client.post("/chat/completions", json=chat_body(stream=True, user="never"), headers=AUTH)
    assert_openai_error(response, 502, "upstream_error")
    assert store.admin.get_customer("never") is None


def test_mock_provider_streams_too(client, store):
    body = chat_body(model="mock-model", stream=True, user="mocked", stream_options={"include_usage": True})
    events = events_of(client.post("/chat/completions", json=body, headers=AUTH).data)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e.get("choices"))
    assert text.startswith("This is a mock response")
    usage = events[-2]["usage"]
    row = store.ledger.spend_logs("mocked")[0]
    assert (row.prompt_tokens, row.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])


def test_budget_reservation_is_settled_when_a_stream_ends(upstream_app):
    client, _, store = upstream_app()
    client.post("/customer/new", json={"user_id": "budgeted", "max_budget": 1}, headers=AUTH)
    response = client.post(
        "/chat/completions", json=chat_body(stream=True, user="budgeted", max_tokens=50), headers=AUTH
    )
    assert response.data.endswith(b"data: [DONE]\n\n")
    [row] = sql_rows(store, "SELECT reserved_units, spend_units FROM spend_accounts WHERE user_id = 'budgeted'")
    assert tuple(map(int, row)) == (0, 60_000_000_000)


ANTHROPIC_EVENTS = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-3-5-sonnet-20241022",
                "content": [],
                "stop_reason": None,
                "usage": {
                    "input_tokens": 100,
                    "output_tokens": 1,
                    "cache_read_input_tokens": 1000,
                    "cache_creation_input_tokens": 0,
                },
            },
        },
    ),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
    ),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 42},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]


def test_anthropic_stream_is_translated_and_charged_from_its_usage(make_app, upstream, environ, store):
    import genai_prices

    environ["ANTHROPIC_API_KEY"] = "sk-ant"
    models = [{"model_name": "claude", "litellm_params": {"model": "anthropic/claude-3-5-sonnet-20241022"}}]
    client = make_app(model_list=models).test_client()
    sse_body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in ANTHROPIC_EVENTS)
    upstream.post("https://api.anthropic.com/v1/messages", body=sse_body, content_type="text/event-stream")
    body = chat_body(model="claude", user="claude-streamer", stream=True, stream_options={"include_usage": True})
    events = events_of(client.post("/chat/completions", json=body, headers=AUTH).data)

    assert json.loads(upstream.calls[0].request.body)["stream"] is True
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e.get("choices"))
    assert text == "Hello"
    assert events[-2]["usage"]["prompt_tokens"] == 1100 and events[-2]["usage"]["completion_tokens"] == 42
    [row] = store.ledger.spend_logs("claude-streamer")
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1100, cache_read_tokens=1000, output_tokens=42),
        "claude-3-5-sonnet-20241022",
        provider_id="anthropic",
    ).total_price
    assert row.estimated is False and Decimal(row.cost_units) / 10**12 == expected


def test_azure_streams_from_its_deployment_url(make_app, upstream):

    models = [
        {
            "model_name": "az",
            "litellm_params": {"model": "azure/dep", "api_base": "https://az.test", "api_key": "k", **PRICED},
        }
    ]
    client = make_app(model_list=models).test_client()
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt",
        "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
    }
    usage = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt",
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    sse_body = f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n"
    upstream.post(
        "https://az.test/openai/deployments/dep/chat/completions",
        body=sse_body,
        content_type="text/event-stream",
        params={"api-version": "2024-10-21"},
    )
    events = events_of(client.post("/chat/completions", json=chat_body(model="az", stream=True), headers=AUTH).data)
    assert [e["choices"][0]["delta"]["content"] for e in events[:-1]] == ["hi"]
    sent = json.loads(upstream.calls[0].request.body)
    assert sent["stream_options"] == {"include_usage": True} and "model" not in sent
