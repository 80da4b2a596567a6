"""The OpenAI Responses API and legacy text completions: relayed, streamed, priced and charged,
under the same admission as chat (SPEC §4). Upstreams are faked at the HTTP boundary only."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tests.helpers import AUTH, PRICED, UPSTREAM, UPSTREAM_KEY, assert_openai_error, chat_body, sql_rows

PRICES = {"input_cost_per_token": 0.000002, "output_cost_per_token": 0.000008, "cache_read_input_token_cost": 0.0000005}


def responses_answer(input_tokens=1000, output_tokens=500, cached=800, reasoning=300, answer_id="resp_abc123") -> dict:
    """A Responses API `response` object as OpenAI returns it."""
    return {
        "id": answer_id,
        "object": "response",
        "created_at": 1741476542,
        "status": "completed",
        "model": "gpt-test-2025",
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Hello there", "annotations": []}],
            },
        ],
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": input_tokens + output_tokens,
        },
    }


# What the answer above costs: uncached input, cached input at the cache price, all output (reasoning included).
ANSWER_COST = 200 * Decimal("0.000002") + 800 * Decimal("0.0000005") + 500 * Decimal("0.000008")


def responses_stream_body(answer: dict) -> str:
    """The events of a streamed Responses API answer, as OpenAI sends them."""
    created = {**answer, "status": "in_progress", "output": [], "usage": None}
    events = [
        ("response.created", {"type": "response.created", "sequence_number": 0, "response": created}),
        ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1",
                                         "output_index": 1, "content_index": 0, "delta": "Hello"}),
        ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 2, "item_id": "msg_1",
                                         "output_index": 1, "content_index": 0, "delta": " there"}),
        ("response.completed", {"type": "response.completed", "sequence_number": 3, "response": answer}),
    ]  # fmt: skip
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)


@pytest.fixture
def models():
    return [
        {
            "model_name": "gpt-test",
            "litellm_params": {"model": "openai/gpt-test", "api_base": UPSTREAM, "api_key": UPSTREAM_KEY, **PRICES},
        },
        {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-3-5-haiku-20241022", **PRICED}},
        {
            "model_name": "mistral",
            "litellm_params": {"model": "mistral/mistral-small-latest", "api_key": "k", **PRICED},
        },
        {"model_name": "mock-model", "litellm_params": {"model": "mock/mock-model", **PRICED}},
    ]


@pytest.fixture
def client(make_app, models):
    return make_app(model_list=models).test_client()


def respond(client, headers=None, **body):
    return client.post(
        "/v1/responses", json={"model": "gpt-test", "input": "Say hello", **body}, headers={**AUTH, **(headers or {})}
    )


@pytest.mark.parametrize("path", ["/v1/responses", "/responses"])
def test_responses_are_relayed_priced_with_cached_and_reasoning_tokens_and_charged(client, upstream, store, path):
    upstream.post(f"{UPSTREAM}/responses", json=responses_answer())
    body = {"model": "gpt-test", "input": "Say hello", "user": "agent-1", "reasoning": {"effort": "low"}}
    response = client.post(path, json=body, headers=AUTH)

    assert response.status_code == 200
    assert response.get_json() == responses_answer()
    assert json.loads(upstream.calls[0].request.body) == body
    assert Decimal(response.headers["x-litellm-response-cost"]) == ANSWER_COST
    [row] = store.ledger.spend_logs("agent-1")
    assert (row.prompt_tokens, row.cached_tokens, row.completion_tokens, row.reasoning_tokens) == (1000, 800, 500, 300)
    assert (row.cost_units, row.response_id) == (int(ANSWER_COST * 10**12), "resp_abc123")
    info = client.get("/customer/info?end_user_id=agent-1", headers=AUTH).get_json()
    assert Decimal(repr(info["spend"])) == ANSWER_COST


def test_a_streamed_response_is_relayed_event_by_event_and_charged_from_its_final_usage(client, upstream, store):
    answer = responses_answer(answer_id="resp_streamed")
    upstream.post(f"{UPSTREAM}/responses", body=responses_stream_body(answer), content_type="text/event-stream")
    response = respond(client, user="streamer", stream=True)

    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert response.get_data(as_text=True) == responses_stream_body(answer)
    sent = json.loads(upstream.calls[0].request.body)
    assert sent["stream"] is True and "stream_options" not in sent
    [row] = store.ledger.spend_logs("streamer")
    assert (row.cost_units, row.estimated, row.response_id) == (int(ANSWER_COST * 10**12), False, "resp_streamed")


def test_a_streamed_response_cut_before_its_usage_is_charged_an_estimate(client, upstream, store):
    answer = responses_answer()
    cut = responses_stream_body(answer).rsplit("event: response.completed", 1)[0]
    upstream.post(f"{UPSTREAM}/responses", body=cut, content_type="text/event-stream")
    respond(client, user="cut-short", stream=True).get_data()
    [row] = store.ledger.spend_logs("cut-short")
    assert row.estimated is True and row.completion_tokens >= 2 and row.cost_units > 0


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"x-litellm-customer-id": "by-header"}, {}),
        ({}, {"user": "by-header"}),
        ({}, {"safety_identifier": "by-header"}),
    ],
)
def test_the_customer_of_a_response_comes_from_user_safety_identifier_or_the_headers(client, upstream, headers, body):
    upstream.post(f"{UPSTREAM}/responses", json=responses_answer())
    assert respond(client, headers=headers, **body).status_code == 200
    assert client.get("/customer/info?end_user_id=by-header", headers=AUTH).get_json()["spend"] > 0


def test_a_customer_over_budget_is_refused_a_response_before_the_upstream(client, upstream):
    client.post("/customer/new", json={"user_id": "broke", "max_budget": 0}, headers=AUTH)
    error = assert_openai_error(respond(client, user="broke"), 422, "budget_exceeded")
    assert error["message"].startswith("ExceededBudget: End User=broke over budget.")
    assert upstream.calls == []


def test_strict_budgets_bound_a_responses_output_with_max_output_tokens(make_app, models, upstream):
    client = make_app(model_list=models, litellm_settings={"budget_enforcement": "strict"}).test_client()
    client.post("/customer/new", json={"user_id": "capped", "max_budget": 0.01}, headers=AUTH)
    upstream.post(
        f"{UPSTREAM}/responses", json=responses_answer(input_tokens=10, output_tokens=10, cached=0, reasoning=0)
    )
    assert respond(client, user="capped").status_code == 200
    bound = json.loads(upstream.calls[0].request.body)["max_output_tokens"]
    assert 0 < bound <= 0.01 / 0.000008


def test_an_idempotency_key_replays_a_response_and_charges_it_once(client, upstream, store):
    upstream.post(f"{UPSTREAM}/responses", json=responses_answer())
    first = respond(client, headers={"Idempotency-Key": "job-7"}, user="retrier")
    again = respond(client, headers={"Idempotency-Key": "job-7"}, user="retrier")
    assert first.data == again.data and again.headers["Idempotent-Replayed"] == "true"
    assert len(upstream.calls) == 1 and len(store.ledger.spend_logs("retrier")) == 1


@pytest.mark.parametrize("model", ["claude", "mistral"])
def test_a_deployment_that_cannot_serve_the_responses_api_answers_400_saying_so(client, upstream, store, model):
    error = assert_openai_error(respond(client, model=model, user="wrong-api"), 400, "invalid_request_error", "model")
    assert "cannot serve the Responses API" in error["message"]
    assert upstream.calls == [] and store.ledger.spend_logs("wrong-api") == []


def test_the_mock_provider_answers_the_responses_api_plain_and_streamed(client, store):
    plain = respond(client, model="mock-model", user="mocked").get_json()
    assert plain["object"] == "response" and plain["id"].startswith("resp_")
    assert plain["output"][0]["content"][0]["text"].startswith("This is a mock response")
    streamed = respond(client, model="mock-model", user="mocked", stream=True).get_data(as_text=True)
    assert streamed.startswith("event: response.created\n") and "event: response.completed\n" in streamed
    rows = store.ledger.spend_logs("mocked")
    assert len(rows) == 2 and all(row.cost_units > 0 and not row.estimated for row in rows)
    assert rows[0].cost_units == rows[1].cost_units


@pytest.mark.parametrize("bad", [{"input": 42}, {"input": {"text": "x"}}, {"stream": "yes"}])
def test_a_malformed_responses_body_is_400(client, bad):
    assert_openai_error(respond(client, **bad), 400, "invalid_request_error")


def completion_answer(prompt_tokens=20, completion_tokens=20) -> dict:
    return {
        "id": "cmpl-abc",
        "object": "text_completion",
        "created": 1700000000,
        "model": "gpt-test-instruct",
        "choices": [{"text": " world", "index": 0, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }  # fmt: skip


@pytest.mark.parametrize("path", ["/v1/completions", "/completions", "/engines/gpt-test/completions"])
def test_text_completions_are_relayed_and_charged(client, upstream, store, path):
    upstream.post(f"{UPSTREAM}/completions", json=completion_answer())
    response = client.post(path, json={"model": "gpt-test", "prompt": "Hello", "user": "legacy"}, headers=AUTH)

    assert response.status_code == 200 and response.get_json() == completion_answer()
    assert json.loads(upstream.calls[0].request.body)["prompt"] == "Hello"
    expected = 20 * Decimal("0.000002") + 20 * Decimal("0.000008")
    assert Decimal(response.headers["x-litellm-response-cost"]) == expected
    assert [(row.cost_units, row.response_id) for row in store.ledger.spend_logs("legacy")] == [
        (int(expected * 10**12), "cmpl-abc")
    ]


def test_streamed_text_completions_ask_for_usage_and_are_charged_from_it(client, upstream, store):
    chunks = [
        {"id": "cmpl-s", "object": "text_completion", "created": 1, "model": "m",
         "choices": [{"text": " wor", "index": 0, "finish_reason": None}]},
        {"id": "cmpl-s", "object": "text_completion", "created": 1, "model": "m",
         "choices": [{"text": "ld", "index": 0, "finish_reason": "stop"}]},
        {"id": "cmpl-s", "object": "text_completion", "created": 1, "model": "m", "choices": [],
         "usage": {"prompt_tokens": 20, "completion_tokens": 20, "total_tokens": 40}},
    ]  # fmt: skip
    sse = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
    upstream.post(f"{UPSTREAM}/completions", body=sse, content_type="text/event-stream")
    body = {"model": "gpt-test", "prompt": "Hello", "user": "legacy-stream", "stream": True}
    text = client.post("/v1/completions", json=body, headers=AUTH).get_data(as_text=True)

    assert '"usage"' not in text and text.endswith("data: [DONE]\n\n")
    assert json.loads(upstream.calls[0].request.body)["stream_options"] == {"include_usage": True}
    [row] = store.ledger.spend_logs("legacy-stream")
    assert (row.prompt_tokens, row.completion_tokens, row.estimated, row.response_id) == (20, 20, False, "cmpl-s")


@pytest.mark.parametrize("model", ["claude", "mistral"])
def test_a_deployment_without_legacy_completions_answers_400_saying_so(client, upstream, model):
    response = client.post("/v1/completions", json={"model": model, "prompt": "Hi"}, headers=AUTH)
    assert "cannot serve text completions" in assert_openai_error(response, 400, param="model")["message"]
    assert upstream.calls == []


@pytest.mark.parametrize("prompt", [None, 7, [], {"text": "x"}])
def test_a_completion_without_a_usable_prompt_is_400(client, prompt):
    body = {"model": "gpt-test"} if prompt is None else {"model": "gpt-test", "prompt": prompt}
    assert_openai_error(client.post("/v1/completions", json=body, headers=AUTH), 400, "invalid_request_error", "prompt")


def test_the_mock_provider_answers_text_completions_plain_and_streamed(client, store):
    body = {"model": "mock-model", "prompt": "Once upon a time", "user": "storyteller"}
    plain = client.post("/v1/completions", json=body, headers=AUTH).get_json()
    assert plain["object"] == "text_completion" and plain["choices"][0]["text"]
    streamed = client.post("/v1/completions", json={**body, "stream": True}, headers=AUTH).get_data(as_text=True)
    assert '"object":"text_completion"' in streamed.replace(" ", "") and streamed.endswith("data: [DONE]\n\n")
    first, second = (row.cost_units for row in store.ledger.spend_logs("storyteller"))
    assert first == second > 0


def test_azure_serves_the_responses_api_at_its_own_url(make_app, upstream):
    models = [
        {
            "model_name": "az",
            "litellm_params": {"model": "azure/my-gpt", "api_base": "https://az.test", "api_key": "az-key", **PRICED},
        }
    ]
    client = make_app(model_list=models).test_client()
    upstream.post(
        "https://az.test/openai/responses", json=responses_answer(), params={"api-version": "2025-04-01-preview"}
    )
    assert respond(client, model="az").status_code == 200
    sent = upstream.calls[0].request
    assert json.loads(sent.body)["model"] == "my-gpt" and sent.headers["api-key"] == "az-key"


def test_chat_completions_still_record_the_upstream_id(client, upstream, store):
    from tests.helpers import openai_reply

    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    client.post("/chat/completions", json=chat_body(user="chatter"), headers=AUTH)
    assert sql_rows(store, "SELECT response_id FROM spend_logs WHERE customer_id = ?", ("chatter",)) == [
        ("chatcmpl-123",)
    ]
