"""Model names as LiteLLM resolves them: bare model names get their provider, wildcard deployments
serve any model they match (SPEC §2). Upstreams are faked at the HTTP boundary only."""

from __future__ import annotations

import json
from decimal import Decimal

import genai_prices
import pytest

from config import ConfigError, parse_config
from tests.helpers import (
    AUTH,
    MASTER_KEY,
    PRICED,
    UPSTREAM,
    anthropic_reply,
    assert_openai_error,
    chat_body,
    openai_reply,
)

ENV = {"LITELLM_MASTER_KEY": MASTER_KEY, "OPENAI_API_KEY": "sk-openai", "ANTHROPIC_API_KEY": "sk-anthropic"}
ANTHROPIC_MESSAGE = anthropic_reply("msg_01")


def deployment_of(model: str, **params):
    document = {"model_list": [{"model_name": "m", "litellm_params": {"model": model, **params}}]}
    config = parse_config(document, ENV)
    return config.deployments[0] if config.deployments else None, config.warnings


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("gpt-4o-mini", "openai"),
        ("o3-mini", "openai"),
        ("text-embedding-3-small", "openai"),
        ("ft:gpt-4o-mini:acme::abc123", "openai"),
        ("claude-3-5-sonnet-20241022", "anthropic"),
        ("mistral-small-latest", "mistral"),
        ("deepseek-chat", "deepseek"),
        ("llama-3.1-8b-instant", "groq"),
    ],
)
def test_a_bare_model_gets_the_provider_litellm_infers(model, provider):
    deployment, warnings = deployment_of(model)
    assert (deployment.provider, deployment.model) == (provider, model)
    assert warnings == ()


def test_a_bare_model_on_a_public_endpoint_is_that_providers():
    deployment, warnings = deployment_of("some-new-model", api_base="https://api.groq.com/openai/v1")
    assert deployment.provider == "groq" and warnings == ()


def test_an_unknown_bare_model_is_served_as_openai_with_a_warning():
    deployment, [warning] = deployment_of("my-finetune", api_base="http://gpu-box:8000/v1")
    assert (deployment.provider, deployment.model, deployment.api_base) == (
        "openai",
        "my-finetune",
        "http://gpu-box:8000/v1",
    )
    assert warning.startswith("model_list[0].litellm_params.model: no provider is known for 'my-finetune'")


def test_a_bare_model_of_a_provider_tollgate_does_not_serve_is_skipped_with_a_warning():
    deployment, [warning] = deployment_of("gemini-2.0-flash")
    assert deployment is None
    assert "'vertex_ai'" in warning and "skipped" in warning


def test_a_star_in_model_needs_a_wildcard_model_name():
    with pytest.raises(ConfigError) as raised:
        deployment_of("openai/*")
    assert raised.value.problems == [
        "model_list[0].litellm_params.model: a '*' in model needs a wildcard model_name (a '*' in it too), "
        "got 'openai/*'"
    ]


def test_bare_model_names_are_served_and_priced_from_the_library(make_app, upstream, environ):
    environ["OPENAI_API_KEY"] = "sk-openai"
    client = make_app(
        model_list=[{"model_name": "gpt-4o-mini", "litellm_params": {"model": "gpt-4o-mini"}}]
    ).test_client()
    upstream.post(
        "https://api.openai.com/v1/chat/completions", json=openai_reply(prompt_tokens=1000, completion_tokens=100)
    )
    response = client.post("/chat/completions", json=chat_body(model="gpt-4o-mini"), headers=AUTH)

    assert response.status_code == 200
    assert upstream.calls[0].request.headers["Authorization"] == "Bearer sk-openai"
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1000, output_tokens=100), "gpt-4o-mini", provider_id="openai"
    ).total_price
    assert Decimal(response.headers["x-litellm-response-cost"]) == expected > 0


WILDCARDS = [
    {"model_name": "*", "litellm_params": {"model": "openai/*", "api_base": UPSTREAM, "api_key": "sk-wild"}},
    {"model_name": "anthropic/*", "litellm_params": {"model": "anthropic/*", "api_key": "sk-ant-wild"}},
    {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o-2024-08-06", "api_base": UPSTREAM, **PRICED}},
]


@pytest.fixture
def wild(make_app):
    return make_app(model_list=WILDCARDS).test_client()


def test_a_catch_all_wildcard_sends_the_requested_name_upstream_and_prices_it(wild, upstream, store):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply(prompt_tokens=2000, completion_tokens=300))
    response = wild.post("/chat/completions", json=chat_body(model="gpt-4.1-mini", user="wild-1"), headers=AUTH)

    assert response.status_code == 200
    sent = upstream.calls[0].request
    assert json.loads(sent.body)["model"] == "gpt-4.1-mini"
    assert sent.headers["Authorization"] == "Bearer sk-wild"
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=2000, output_tokens=300), "gpt-4.1-mini", provider_id="openai"
    ).total_price
    assert Decimal(response.headers["x-litellm-response-cost"]) == expected > 0
    [row] = store.ledger.spend_logs("wild-1")
    assert (row.model_group, row.provider_model) == ("gpt-4.1-mini", "openai/gpt-4.1-mini")


@pytest.mark.parametrize("requested", ["anthropic/claude-3-5-haiku-20241022", "claude-3-5-haiku-20241022"])
def test_a_provider_wildcard_serves_its_models_with_or_without_the_prefix(make_app, upstream, requested):
    # Without the catch-all, a bare claude name is matched as anthropic/<name>, as LiteLLM does.
    client = make_app(model_list=WILDCARDS[1:]).test_client()
    upstream.post("https://api.anthropic.com/v1/messages", json=ANTHROPIC_MESSAGE)
    response = client.post("/chat/completions", json=chat_body(model=requested), headers=AUTH)

    assert response.status_code == 200
    sent = upstream.calls[0].request
    assert json.loads(sent.body)["model"] == "claude-3-5-haiku-20241022"
    assert sent.headers["x-api-key"] == "sk-ant-wild"
    assert Decimal(response.headers["x-litellm-response-cost"]) > 0


def test_an_explicit_model_name_wins_over_a_wildcard(wild, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    response = wild.post("/chat/completions", json=chat_body(model="gpt-4o"), headers=AUTH)

    assert json.loads(upstream.calls[0].request.body)["model"] == "gpt-4o-2024-08-06"
    assert response.headers["x-litellm-response-cost"] == "0.06"  # its own custom prices


def test_the_most_specific_wildcard_wins(make_app, upstream):
    models = [
        {"model_name": "*", "litellm_params": {"model": "openai/*", "api_base": UPSTREAM}},
        {"model_name": "team-a/*", "litellm_params": {"model": "openai/team-a-*", "api_base": UPSTREAM}},
    ]
    client = make_app(model_list=models).test_client()
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    client.post("/chat/completions", json=chat_body(model="team-a/gpt-4o"), headers=AUTH)
    assert json.loads(upstream.calls[0].request.body)["model"] == "team-a-gpt-4o"


def test_a_wildcard_that_picks_the_provider_per_call_uses_that_providers_key(make_app, upstream, environ):
    environ.update(OPENAI_API_KEY="sk-openai-env", ANTHROPIC_API_KEY="sk-anthropic-env")
    client = make_app(model_list=[{"model_name": "*", "litellm_params": {"model": "*"}}]).test_client()
    upstream.post("https://api.anthropic.com/v1/messages", json=ANTHROPIC_MESSAGE)
    upstream.post("https://api.openai.com/v1/chat/completions", json=openai_reply())

    assert (
        client.post("/chat/completions", json=chat_body(model="claude-3-5-haiku-20241022"), headers=AUTH).status_code
        == 200
    )
    assert client.post("/chat/completions", json=chat_body(model="gpt-4o-mini"), headers=AUTH).status_code == 200
    anthropic_call, openai_call = (call.request for call in upstream.calls)
    assert anthropic_call.headers["x-api-key"] == "sk-anthropic-env"
    assert openai_call.headers["Authorization"] == "Bearer sk-openai-env"
    refused = client.post("/chat/completions", json=chat_body(model="gemini-2.0-flash"), headers=AUTH)
    assert "vertex_ai" in assert_openai_error(refused, 400, "invalid_request_error", "model")["message"]


def test_a_model_no_wildcard_matches_is_400_listing_the_patterns(make_app):
    client = make_app(model_list=WILDCARDS[1:]).test_client()
    error = assert_openai_error(
        client.post("/chat/completions", json=chat_body(model="mistral-large"), headers=AUTH), 400, param="model"
    )
    assert "anthropic/*" in error["message"] and "gpt-4o" in error["message"]


def test_an_unpriced_model_through_a_wildcard_is_served_and_charged_nothing(wild, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    response = wild.post("/chat/completions", json=chat_body(model="my-private-finetune", user="free"), headers=AUTH)
    assert response.status_code == 200 and response.headers["x-litellm-response-cost"] == "0"


def test_models_list_names_and_patterns_and_answers_one_by_id(wild):
    listed = wild.get("/v1/models", headers=AUTH).get_json()["data"]
    assert [(m["id"], m["owned_by"]) for m in listed] == [
        ("gpt-4o", "openai"),
        ("*", "openai"),
        ("anthropic/*", "anthropic"),
    ]
    for path in ("/v1/models/gpt-4o", "/models/gpt-4o"):
        assert wild.get(path, headers=AUTH).get_json() == listed[0]
    by_wildcard = wild.get("/v1/models/anthropic/claude-3-5-haiku-20241022", headers=AUTH).get_json()
    assert (by_wildcard["id"], by_wildcard["object"], by_wildcard["owned_by"]) == (
        "anthropic/claude-3-5-haiku-20241022",
        "model",
        "anthropic",
    )


def test_models_by_id_is_404_for_a_model_not_served(client):
    error = assert_openai_error(client.get("/v1/models/not-configured", headers=AUTH), 404, "not_found", "model")
    assert "not-configured" in error["message"]


def test_a_customers_default_model_may_be_one_a_wildcard_serves(wild):
    created = wild.post("/customer/new", json={"user_id": "w", "default_model": "gpt-4.1-nano"}, headers=AUTH)
    assert created.status_code == 200 and created.get_json()["default_model"] == "gpt-4.1-nano"


@pytest.mark.parametrize(("pattern", "requested"), [("gpt-*-mini", "gpt-4o-mini-tts"), ("team-a/*", "team-b/gpt-4o")])
def test_a_wildcard_must_match_the_whole_requested_name(make_app, pattern, requested):
    models = [{"model_name": pattern, "litellm_params": {"model": "openai/*", "api_base": UPSTREAM}}]
    client = make_app(model_list=models).test_client()
    assert_openai_error(client.post("/chat/completions", json=chat_body(model=requested), headers=AUTH), 400)


@pytest.mark.parametrize("requested", ["gpt\n4o", "x" * 257, "tab\there"])
def test_a_requested_name_a_wildcard_would_pass_on_must_be_printable_and_short(wild, upstream, requested):
    error = assert_openai_error(wild.post("/chat/completions", json=chat_body(model=requested), headers=AUTH), 400)
    assert error["param"] == "model" and upstream.calls == []
