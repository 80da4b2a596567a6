"""Embeddings are priced and charged like chat; an Idempotency-Key makes a retried call free."""

from __future__ import annotations

import json
from decimal import Decimal

import genai_prices
import pytest

from tests.helpers import AUTH, UPSTREAM, assert_openai_error, chat_body, openai_reply


@pytest.mark.parametrize("path", ["/embeddings", "/v1/embeddings"])
def test_embeddings_are_relayed_and_charged(make_app, upstream, path):
    models = [
        {"model_name": "embed", "litellm_params": {"model": "openai/text-embedding-3-small", "api_base": UPSTREAM}}
    ]
    client = make_app(model_list=models).test_client()
    reply = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 5000, "total_tokens": 5000},
    }
    upstream.post(f"{UPSTREAM}/embeddings", json=reply)
    response = client.post(path, json={"model": "embed", "input": "hello world", "user": "embedder"}, headers=AUTH)

    assert response.status_code == 200 and response.get_json() == reply
    assert json.loads(upstream.calls[0].request.body) == {
        "model": "text-embedding-3-small",
        "input": "hello world",
        "user": "embedder",
    }
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=5000), "text-embedding-3-small", provider_id="openai"
    ).total_price
    assert Decimal(response.headers["x-litellm-response-cost"]) == expected > 0
    info = client.get("/customer/info?end_user_id=embedder", headers=AUTH).get_json()
    assert Decimal(repr(info["spend"])) == expected


def test_mock_embeddings(client):
    response = client.post(
        "/embeddings", json={"model": "mock-model", "input": ["a", "b c"], "user": "m"}, headers=AUTH
    )
    body = response.get_json()
    assert [item["index"] for item in body["data"]] == [0, 1] and len(body["data"][0]["embedding"]) == 16
    assert body["usage"]["prompt_tokens"] == 3


@pytest.mark.parametrize("given", [None, "", [], 5])
def test_embeddings_need_input(client, given):
    body = {"model": "mock-model"} if given is None else {"model": "mock-model", "input": given}
    assert_openai_error(client.post("/embeddings", json=body, headers=AUTH), 400, param="input")


def test_same_idempotency_key_is_charged_once_and_replayed(client, upstream, store):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    headers = {**AUTH, "Idempotency-Key": "order-17"}
    first = client.post("/chat/completions", json=chat_body(user="careful"), headers=headers)
    second = client.post("/chat/completions", json=chat_body(user="careful"), headers=headers)

    assert first.status_code == second.status_code == 200
    assert second.data == first.data
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["x-litellm-call-id"] == first.headers["x-litellm-call-id"]
    assert len(upstream.calls) == 1
    assert store.admin.get_customer("careful").spend_units == 60_000_000_000
    assert len(store.ledger.spend_logs("careful")) == 1


def test_idempotency_key_is_per_customer(client, upstream, store):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    headers = {**AUTH, "Idempotency-Key": "shared-key"}
    for user in ("one", "two"):
        assert client.post("/chat/completions", json=chat_body(user=user), headers=headers).status_code == 200
    assert len(upstream.calls) == 2


def test_failed_call_frees_its_idempotency_key(client, upstream, store):
    upstream.post(f"{UPSTREAM}/chat/completions", status=500, json={"error": {"message": "down"}})
    headers = {**AUTH, "Idempotency-Key": "retry-me"}
    assert client.post("/chat/completions", json=chat_body(user="r"), headers=headers).status_code == 502
    upstream.replace("POST", f"{UPSTREAM}/chat/completions", json=openai_reply())
    assert client.post("/chat/completions", json=chat_body(user="r"), headers=headers).status_code == 200
    assert store.admin.get_customer("r").spend_units == 60_000_000_000


def test_streamed_call_is_replayed_too(client, store):
    headers = {**AUTH, "Idempotency-Key": "stream-1"}
    body = chat_body(model="mock-model", user="streamy", stream=True)
    first = client.post("/chat/completions", json=body, headers=headers).data  # read to its end: settled
    second = client.post("/chat/completions", json=body, headers=headers).data
    assert first == second and first.endswith(b"data: [DONE]\n\n")
    assert len(store.ledger.spend_logs("streamy")) == 1


def test_call_in_flight_with_the_same_key_is_409(client, store):
    from spend.store import IdempotencyClaim

    store.ledger.claim_idempotency(IdempotencyClaim("busy", "k1"), "other-request", now=9e12, hold=600)
    response = client.post(
        "/chat/completions", json=chat_body(model="mock-model", user="busy"), headers={**AUTH, "Idempotency-Key": "k1"}
    )
    assert_openai_error(response, 409, "idempotency_conflict", "Idempotency-Key")


def test_refused_call_frees_its_idempotency_key(client, store):
    client.post("/customer/new", json={"user_id": "broke", "max_budget": 0}, headers=AUTH)
    headers = {**AUTH, "Idempotency-Key": "k2"}
    assert (
        client.post("/chat/completions", json=chat_body(model="mock-model", user="broke"), headers=headers).status_code
        == 422
    )
    client.post("/customer/update", json={"user_id": "broke", "max_budget": 10}, headers=AUTH)
    assert (
        client.post("/chat/completions", json=chat_body(model="mock-model", user="broke"), headers=headers).status_code
        == 200
    )


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there"])
def test_bad_idempotency_key_is_400(client, key):
    response = client.post(
        "/chat/completions", json=chat_body(model="mock-model"), headers={**AUTH, "Idempotency-Key": key}
    )
    assert_openai_error(response, 400, param="Idempotency-Key")
