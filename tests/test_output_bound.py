"""Reservations the upstream cannot overrun (SPEC §4, §8): when a budget reservation relied on an
output bound the client did not send, that bound is sent upstream; what the upstream reports is
charged in any case. The upstream is the local one, which records what it received."""

from __future__ import annotations

import json

import pytest

from spend.admission import DEFAULT_OUTPUT_LIMIT
from tests.helpers import AUTH, PRICED, UPSTREAM, anthropic_reply, chat_body, openai_reply

BOUND = 64
BOUNDED = {"model": "openai/gpt-test", "api_base": UPSTREAM, "api_key": "k", **PRICED}


def models(params=BOUNDED, max_output_tokens=BOUND) -> list[dict]:
    info = {"max_output_tokens": max_output_tokens} if max_output_tokens else {}
    return [{"model_name": "m", "litellm_params": params, "model_info": info}]


def sent(upstream) -> dict:
    [call] = upstream.calls
    return json.loads(call.request.body)


def output_fields(body: dict) -> dict:
    return {key: body[key] for key in ("max_tokens", "max_completion_tokens", "max_output_tokens") if key in body}


@pytest.fixture
def budgeted(make_app):
    """`make(model_list, **settings)` -> a client whose customer `capped` has a $10 budget."""

    def make(model_list=None, **litellm_settings):
        client = make_app(model_list=model_list or models(), litellm_settings=litellm_settings).test_client()
        created = client.post("/customer/new", json={"user_id": "capped", "max_budget": 10}, headers=AUTH)
        assert created.status_code == 200
        return client

    return make


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, {"max_tokens": BOUND}),
        ({"max_tokens": 10}, {"max_tokens": 10}),
        ({"max_completion_tokens": 10}, {"max_completion_tokens": 10}),
        ({"max_tokens": 5000}, {"max_tokens": BOUND}),
        ({"max_completion_tokens": 5000}, {"max_completion_tokens": BOUND}),
    ],
    ids=["none-sent", "own-max-tokens", "own-max-completion-tokens", "above-limit", "above-limit-completion"],
)
@pytest.mark.parametrize("enforcement", ["standard", "strict"])
def test_chat_sends_the_bound_its_reservation_relied_on(budgeted, upstream, given, expected, enforcement):
    client = budgeted(budget_enforcement=enforcement)
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    response = client.post("/chat/completions", json=chat_body("capped", "m", **given), headers=AUTH)
    assert response.status_code == 200
    assert output_fields(sent(upstream)) == expected


def test_a_call_without_a_budget_is_relayed_without_a_bound(make_app, upstream):
    client = make_app(model_list=models()).test_client()
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    assert client.post("/chat/completions", json=chat_body("free", "m"), headers=AUTH).status_code == 200
    assert output_fields(sent(upstream)) == {}


def test_a_model_without_an_output_limit_is_bounded_by_the_default(budgeted, upstream):
    client = budgeted(models(max_output_tokens=None))
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    assert client.post("/chat/completions", json=chat_body("capped", "m"), headers=AUTH).status_code == 200
    assert output_fields(sent(upstream)) == {"max_tokens": DEFAULT_OUTPUT_LIMIT}


def test_a_bound_that_is_the_models_context_window_is_not_sent(budgeted, upstream):
    # Priced from the library, which knows gpt-4o's context window: no answer can be longer.
    client = budgeted(models({"model": "openai/gpt-4o", "api_base": UPSTREAM, "api_key": "k"}, None))
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    assert client.post("/chat/completions", json=chat_body("capped", "m"), headers=AUTH).status_code == 200
    assert output_fields(sent(upstream)) == {}


def test_responses_and_completions_send_the_bound_under_their_own_names(budgeted, upstream):
    client = budgeted()
    answer = {"id": "resp_1", "object": "response", "status": "completed", "output": [],
              "usage": {"input_tokens": 5, "output_tokens": 5}}  # fmt: skip
    upstream.post(f"{UPSTREAM}/responses", json=answer)
    upstream.post(f"{UPSTREAM}/completions", json={**openai_reply(), "object": "text_completion"})
    body = {"model": "m", "user": "capped"}
    assert client.post("/responses", json={**body, "input": "hi"}, headers=AUTH).status_code == 200
    assert client.post("/completions", json={**body, "prompt": "hi"}, headers=AUTH).status_code == 200
    responses, completions = (json.loads(call.request.body) for call in upstream.calls)
    assert output_fields(responses) == {"max_output_tokens": BOUND}
    assert output_fields(completions) == {"max_tokens": BOUND}


def test_anthropic_gets_the_reservations_bound_as_its_max_tokens(budgeted, upstream):
    params = {"model": "anthropic/claude-3-5-haiku-20241022", "api_key": "sk-ant", **PRICED}
    client = budgeted(models(params))
    upstream.post("https://api.anthropic.com/v1/messages", json=anthropic_reply())
    assert client.post("/chat/completions", json=chat_body("capped", "m"), headers=AUTH).status_code == 200
    assert sent(upstream)["max_tokens"] == BOUND


def test_what_the_upstream_reports_is_charged_even_past_the_bound(budgeted, upstream):
    client = budgeted()
    store = client.application.extensions["tollgate"].store
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply(prompt_tokens=20, completion_tokens=1000))
    assert client.post("/chat/completions", json=chat_body("capped", "m"), headers=AUTH).status_code == 200
    [row] = store.ledger.spend_logs("capped")
    assert (row.completion_tokens, row.cost_units) == (1000, (20 * 1 + 1000 * 2) * 10**9)
