"""Chat completions through each provider adapter, with the upstream faked at the HTTP boundary."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest

from tests.helpers import AUTH, CUSTOMER_KEYS, PRICED, UPSTREAM, UPSTREAM_KEY, chat_body, openai_reply, sql_rows


def test_chat_relays_body_with_provider_model_and_returns_upstream_reply(client, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    response = client.post("/chat/completions", json=chat_body(temperature=0.2), headers=AUTH)

    assert response.status_code == 200
    assert response.get_json() == openai_reply()
    sent = upstream.calls[0].request
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert json.loads(sent.body) == {**chat_body(temperature=0.2), "model": "gpt-test"}


def test_chat_response_headers_carry_cost_and_call_id(client, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply(prompt_tokens=20, completion_tokens=20))
    response = client.post("/v1/chat/completions", json=chat_body(), headers=AUTH)

    assert response.headers["x-litellm-response-cost"] == "0.06"
    assert len(response.headers["x-litellm-call-id"]) == 36
    assert "x-litellm-model-region" not in response.headers


@pytest.mark.parametrize(
    "path",
    [
        "/chat/completions",
        "/v1/chat/completions",
        "/openai/deployments/gpt-test/chat/completions",
        "/engines/gpt-test/chat/completions",
    ],
)
def test_every_chat_path_serves_and_charges(client, upstream, path):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    body = chat_body(user="path-user")
    response = client.post(path, json=body, headers=AUTH)

    assert response.status_code == 200
    info = client.get("/customer/info?end_user_id=path-user", headers=AUTH).get_json()
    assert info["spend"] == 0.06


def test_spend_increments_exactly_on_every_call(client, upstream, store):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply(prompt_tokens=7, completion_tokens=3))
    for _ in range(30):
        assert client.post("/chat/completions", json=chat_body(user="exact"), headers=AUTH).status_code == 200

    per_call = 7 * Decimal("0.001") + 3 * Decimal("0.002")
    info = client.get("/customer/info?end_user_id=exact", headers=AUTH).get_json()
    assert Decimal(repr(info["spend"])) == 30 * per_call
    assert store.admin.get_customer("exact").spend_units == int(30 * per_call * 10**12)
    assert len(store.ledger.spend_logs("exact")) == 30


def test_customer_info_has_every_key_in_seed_order(client, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    client.post("/chat/completions", json=chat_body(user="ishaan3"), headers=AUTH)
    response = client.get("/customer/info?end_user_id=ishaan3", headers=AUTH)

    assert response.status_code == 200
    body = response.get_json()
    assert list(body) == CUSTOMER_KEYS
    assert body == {
        "user_id": "ishaan3",
        "blocked": False,
        "alias": None,
        "spend": 0.06,
        "allowed_model_region": None,
        "default_model": None,
        "models": [],
        "budget_id": None,
        "litellm_budget_table": None,
    }
    assert b'"spend":0.06' in response.data


def test_small_spend_is_written_as_a_plain_decimal(client):
    response = client.post("/chat/completions", json=chat_body(model="mock-model", user="tiny"), headers=AUTH)
    assert response.status_code == 200

    info = client.get("/customer/info?end_user_id=tiny", headers=AUTH)
    assert b"e-" not in info.data
    assert json.loads(info.data)["spend"] == float(response.headers["x-litellm-response-cost"])


def test_cached_prompt_tokens_are_billed_once_at_the_cache_price(make_app, upstream):
    models = [
        {
            "model_name": "cached",
            "litellm_params": {
                "model": "openai/cached",
                "api_base": UPSTREAM,
                "input_cost_per_token": 0.000002,
                "output_cost_per_token": 0.000008,
                "cache_read_input_token_cost": 0.0000005,
            },
        }
    ]
    client = make_app(model_list=models).test_client()
    upstream.post(
        f"{UPSTREAM}/chat/completions",
        json=openai_reply(prompt_tokens=1000, completion_tokens=100, prompt_tokens_details={"cached_tokens": 800}),
    )
    response = client.post("/chat/completions", json=chat_body(model="cached"), headers=AUTH)

    expected = 200 * Decimal("0.000002") + 800 * Decimal("0.0000005") + 100 * Decimal("0.000008")
    assert Decimal(response.headers["x-litellm-response-cost"]) == expected


def test_library_priced_model_costs_what_the_pricing_library_says(make_app, upstream):
    import genai_prices

    models = [{"model_name": "mini", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": UPSTREAM}}]
    client = make_app(model_list=models).test_client()
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply(prompt_tokens=1234, completion_tokens=567))
    response = client.post("/chat/completions", json=chat_body(model="mini"), headers=AUTH)

    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1234, output_tokens=567), "gpt-4o-mini", provider_id="openai"
    ).total_price
    assert Decimal(response.headers["x-litellm-response-cost"]) == expected > 0


def test_unpriced_model_is_served_and_charged_nothing(make_app, upstream, caplog):
    models = [{"model_name": "local", "litellm_params": {"model": "hosted_vllm/my-finetune", "api_base": UPSTREAM}}]
    app = make_app(model_list=models)
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    client = app.test_client()
    response = client.post("/chat/completions", json=chat_body(model="local", user="free"), headers=AUTH)

    assert response.status_code == 200
    assert response.headers["x-litellm-response-cost"] == "0"
    assert client.get("/customer/info?end_user_id=free", headers=AUTH).get_json()["spend"] == 0
    assert app.extensions["tollgate"].store.ledger.spend_logs("free")[0].cost_units == 0


def test_unpriced_model_is_refused_when_configured(make_app):
    models = [{"model_name": "local", "litellm_params": {"model": "hosted_vllm/my-finetune", "api_base": UPSTREAM}}]
    client = make_app(model_list=models, litellm_settings={"block_requests_for_models_without_pricing": True})
    response = client.test_client().post("/chat/completions", json=chat_body(model="local"), headers=AUTH)

    from tests.helpers import assert_openai_error

    assert_openai_error(response, 403, "model_cost_map_missing", "model")


def test_call_without_customer_is_served_and_logged_for_nobody(client, upstream, store):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    response = client.post("/chat/completions", json=chat_body(user=None), headers=AUTH)

    assert response.status_code == 200
    [row] = store.ledger.spend_logs()
    assert row.customer_id is None and row.cost_units == 60_000_000_000


def test_azure_deployment_uses_deployment_url_api_version_and_api_key_header(make_app, upstream):
    models = [
        {
            "model_name": "azure-gpt",
            "litellm_params": {
                "model": "azure/my-deployment",
                "api_base": "https://example.openai.azure.test",
                "api_key": "az-key",
                "api_version": "2024-06-01",
                "region_name": "eu",
                **PRICED,
            },
        }
    ]
    client = make_app(model_list=models).test_client()
    upstream.post(
        "https://example.openai.azure.test/openai/deployments/my-deployment/chat/completions",
        json=openai_reply(),
        params={"api-version": "2024-06-01"},
    )
    response = client.post("/chat/completions", json=chat_body(model="azure-gpt"), headers=AUTH)

    assert response.status_code == 200
    assert response.headers["x-litellm-model-region"] == "eu"
    sent = upstream.calls[0].request
    assert sent.headers["api-key"] == "az-key"
    assert "Authorization" not in sent.headers
    assert "model" not in json.loads(sent.body)


def test_mistral_deployment_uses_public_default_base_and_env_key(make_app, upstream, environ):
    environ["MISTRAL_API_KEY"] = "mistral-key"
    models = [{"model_name": "mistral-small", "litellm_params": {"model": "mistral/mistral-small-latest"}}]
    client = make_app(model_list=models).test_client()
    upstream.post("https://api.mistral.ai/v1/chat/completions", json=openai_reply())
    response = client.post("/chat/completions", json=chat_body(model="mistral-small", user="m1"), headers=AUTH)

    assert response.status_code == 200
    assert upstream.calls[0].request.headers["Authorization"] == "Bearer mistral-key"
    assert float(response.headers["x-litellm-response-cost"]) > 0


def test_mock_provider_answers_without_network(client):
    response = client.post("/chat/completions", json=chat_body(model="mock-model", user="m"), headers=AUTH)

    assert response.status_code == 200
    body = response.get_json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"]
    usage = body["usage"]
    expected = usage["prompt_tokens"] * Decimal("0.001") + usage["completion_tokens"] * Decimal("0.002")
    assert Decimal(response.headers["x-litellm-response-cost"]) == expected


def test_mock_provider_token_counts_grow_with_the_prompt(client):
    short = client.post("/chat/completions", json=chat_body(model="mock-model"), headers=AUTH).get_json()
    long_body = chat_body(model="mock-model", messages=[{"role": "user", "content": "hello there " * 50}])
    long = client.post("/chat/completions", json=long_body, headers=AUTH).get_json()
    assert long["usage"]["prompt_tokens"] > short["usage"]["prompt_tokens"] + 50


def test_mock_response_is_configurable(make_app):
    models = [{"model_name": "m", "litellm_params": {"model": "mock/x", "mock_response": "fixed answer", **PRICED}}]
    client = make_app(model_list=models).test_client()
    body = client.post("/chat/completions", json=chat_body(model="m"), headers=AUTH).get_json()
    assert body["choices"][0]["message"]["content"] == "fixed answer"


def test_models_lists_each_configured_model_once(make_app):
    models = [
        {"model_name": "a", "litellm_params": {"model": "mock/a"}},
        {"model_name": "a", "litellm_params": {"model": "mock/a2"}},
        {"model_name": "b", "litellm_params": {"model": "openai/b", "api_base": UPSTREAM}},
    ]
    client = make_app(model_list=models).test_client()
    for path in ("/models", "/v1/models"):
        body = client.get(path, headers=AUTH).get_json()
        assert body["object"] == "list"
        assert [(m["id"], m["object"], m["owned_by"]) for m in body["data"]] == [
            ("a", "model", "mock"),
            ("b", "model", "openai"),
        ]
        assert all(isinstance(m["created"], int) for m in body["data"])


def test_anthropic_deployment_is_translated_and_cache_tokens_priced_once(make_app, upstream, environ):
    import genai_prices

    environ["ANTHROPIC_API_KEY"] = "sk-ant-test"
    models = [{"model_name": "claude", "litellm_params": {"model": "anthropic/claude-3-5-sonnet-20241022"}}]
    client = make_app(model_list=models).test_client()
    upstream.post(
        "https://api.anthropic.com/v1/messages",
        json={
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-3-5-sonnet-20241022",
            "content": [{"type": "text", "text": "Hello!"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 100,
                "output_tokens": 50,
                "cache_creation_input_tokens": 300,
                "cache_read_input_tokens": 2000,
            },
        },
    )
    response = client.post("/chat/completions", json=chat_body(model="claude", user="anthropic-user"), headers=AUTH)

    assert response.status_code == 200
    body = response.get_json()
    assert body["choices"][0]["message"]["content"] == "Hello!"
    assert body["usage"]["prompt_tokens"] == 2400
    assert upstream.calls[0].request.headers["x-api-key"] == "sk-ant-test"
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=2400, cache_write_tokens=300, cache_read_tokens=2000, output_tokens=50),
        "claude-3-5-sonnet-20241022",
        provider_id="anthropic",
    ).total_price
    assert Decimal(response.headers["x-litellm-response-cost"]) == expected


MISTRAL = [
    {
        "model_name": "mistral-small",
        "litellm_params": {"model": "mistral/mistral-small-latest", "api_key": "k", **PRICED},
    }
]


def test_parameters_a_provider_rejects_are_refused_without_drop_params(make_app, upstream):
    from tests.helpers import assert_openai_error

    client = make_app(model_list=MISTRAL).test_client()
    response = client.post(
        "/chat/completions", json=chat_body(model="mistral-small", logit_bias={"1": 2}), headers=AUTH
    )
    error = assert_openai_error(response, 400, "invalid_request_error")
    assert "['logit_bias']" in error["message"] and "drop_params" in error["message"]
    assert len(upstream.calls) == 0


def test_drop_params_drops_them_and_proxy_fields_never_leave(make_app, upstream):
    client = make_app(model_list=MISTRAL, litellm_settings={"drop_params": True}).test_client()
    upstream.post("https://api.mistral.ai/v1/chat/completions", json=openai_reply())
    body = chat_body(
        model="mistral-small",
        logprobs=True,
        temperature=0.5,
        metadata={"user_id": "m"},
        litellm_metadata={"user": "x"},
        fallbacks=["other"],
    )
    assert client.post("/chat/completions", json=body, headers=AUTH).status_code == 200
    sent = json.loads(upstream.calls[0].request.body)
    assert sent == {"model": "mistral-small-latest", "messages": body["messages"], "temperature": 0.5, "user": "cust-1"}


def test_openai_gets_metadata_and_the_user_unchanged(client, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    body = chat_body(metadata={"purpose": "test"}, user="  spaced  ")
    client.post("/chat/completions", json=body, headers=AUTH)
    sent = json.loads(upstream.calls[0].request.body)
    assert sent["metadata"] == {"purpose": "test"} and sent["user"] == "  spaced  "


def test_reasoning_tokens_are_billed_once_as_completion_tokens(client, upstream, store):
    # An o-series answer: reasoning tokens are counted inside completion_tokens.
    upstream.post(
        f"{UPSTREAM}/chat/completions",
        json=openai_reply(
            prompt_tokens=100, completion_tokens=1500, completion_tokens_details={"reasoning_tokens": 1200}
        ),
    )
    response = client.post("/chat/completions", json=chat_body(user="thinker"), headers=AUTH)
    assert Decimal(response.headers["x-litellm-response-cost"]) == 100 * Decimal("0.001") + 1500 * Decimal("0.002")
    assert sql_rows(store, "SELECT reasoning_tokens FROM spend_logs") == [(1200,)]


def test_overhead_header_excludes_the_upstream_wait(make_app):
    models = [{"model_name": "slow", "litellm_params": {"model": "mock/slow", "mock_latency_ms": 300, **PRICED}}]
    client = make_app(model_list=models).test_client()
    before = time.perf_counter()
    response = client.post("/chat/completions", json=chat_body(model="slow"), headers=AUTH)
    total_ms = (time.perf_counter() - before) * 1000
    overhead = float(response.headers["x-litellm-overhead-duration-ms"])
    assert 0 < overhead <= total_ms - 300  # the 300 ms the deployment took are not Tollgate's
