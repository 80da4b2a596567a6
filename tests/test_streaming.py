"""Streaming: chunks relayed as they arrive, usage asked for and stripped, every ending charged."""

from __future__ import annotations

import json
import threading
from decimal import Decimal

import pytest

from tests.fake_upstream import FakeUpstream
from tests.helpers import AUTH, PRICED, chat_body


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
    [row] = store.spend_logs("streamer")
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
    assert store.get_customer("plain").spend_units == store.get_customer("streamed").spend_units
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
    assert store.spend_logs("early")[0].estimated is False


def test_client_that_leaves_after_two_chunks_is_charged_an_estimate(upstream_app):
    client, _, store = upstream_app(chunk_delay_ms=20)
    response = client.post(
        "/chat/completions", json=chat_body(stream=True, user="leaver"), headers=AUTH, buffered=False
    )
    chunks = iter(response.response)
    next(chunks), next(chunks)
    response.close()
    [row] = store.spend_logs("leaver")
    assert row.estimated is True and row.status == "success"
    assert row.prompt_tokens > 0 and row.cost_units > 0
    again = client.post("/chat/completions", json=chat_body(user="after-leaver"), headers=AUTH)
    assert again.status_code == 200


def test_upstream_that_cuts_the_stream_is_charged_an_estimate(upstream_app):
    client, _, store = upstream_app(cut_after=3)
    response = client.post("/chat/completions", json=chat_body(stream=True, user="cut"), headers=AUTH)
    events = events_of(response.data)
    assert "error" in events[-1]
    [row] = store.spend_logs("cut")
    assert row.estimated is True and row.completion_tokens >= 1


def test_stream_error_before_the_first_byte_is_an_ordinary_error(upstream_app):
    from tests.helpers import assert_openai_error

    client, _, store = upstream_app(status=500)
    response = client.post("/chat/completions", json=chat_body(stream=True, user="never"), headers=AUTH)
    assert_openai_error(response, 502, "upstream_error")
    assert store.get_customer("never") is None


def test_mock_provider_streams_too(client, store):
    body = chat_body(model="mock-model", stream=True, user="mocked", stream_options={"include_usage": True})
    events = events_of(client.post("/chat/completions", json=body, headers=AUTH).data)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e.get("choices"))
    assert text.startswith("This is a mock response")
    usage = events[-2]["usage"]
    row = store.spend_logs("mocked")[0]
    assert (row.prompt_tokens, row.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])


def test_budget_reservation_is_settled_when_a_stream_ends(upstream_app):
    client, _, store = upstream_app()
    client.post("/customer/new", json={"user_id": "budgeted", "max_budget": 1}, headers=AUTH)
    response = client.post(
        "/chat/completions", json=chat_body(stream=True, user="budgeted", max_tokens=50), headers=AUTH
    )
    assert response.data.endswith(b"data: [DONE]\n\n")
    connection = store._connection()
    assert connection.execute(
        "SELECT reserved_units, spend_units FROM spend_accounts WHERE user_id = 'budgeted'"
    ).fetchone() == (0, 60_000_000_000)
