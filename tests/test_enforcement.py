"""Enforcement on every LLM call, in SPEC §8 order, before the upstream is contacted."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tests.helpers import AUTH, PRICED, UPSTREAM, assert_openai_error, chat_body, openai_reply, sql_rows


class Clock:
    """A settable clock for the app, so budget windows can be crossed without waiting."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def admin(client):
    def call(path, body):
        response = client.post(path, json=body, headers=AUTH)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    return call


def chat(client, user="cust-1", model="gpt-test", headers=None, **extra):
    return client.post(
        "/chat/completions", json=chat_body(user=user, model=model, **extra), headers={**AUTH, **(headers or {})}
    )


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"x-litellm-customer-id": "bad-actor"}, {}),
        ({"x-litellm-end-user-id": "bad-actor"}, {}),
        ({}, {"user": "bad-actor"}),
        ({}, {"litellm_metadata": {"user": "bad-actor"}}),
        ({}, {"metadata": {"user_id": "bad-actor"}}),
    ],
)
def test_blocked_customer_is_refused_for_every_spelling(client, admin, upstream, headers, body):
    admin("/customer/block", {"user_ids": ["bad-actor"]})
    request_body = {**chat_body(user=None), **body}
    response = client.post("/chat/completions", json=request_body, headers={**AUTH, **headers})
    error = assert_openai_error(response, 400, "invalid_request_error")
    assert error["message"] == "User blocked from making LLM API Calls. User=bad-actor"
    assert len(upstream.calls) == 0


def test_unblocked_customer_is_served_again(client, admin, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    admin("/customer/block", {"user_ids": ["flip"]})
    assert chat(client, "flip").status_code == 400
    admin("/customer/unblock", {"user_ids": ["flip"]})
    assert chat(client, "flip").status_code == 200


def test_model_allowlist_refuses_other_models(client, admin, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    admin("/customer/new", {"user_id": "narrow", "models": ["gpt-test"]})
    assert chat(client, "narrow", model="gpt-test").status_code == 200
    response = chat(client, "narrow", model="mock-model")
    error = assert_openai_error(response, 403, "customer_model_access_denied", "model")
    assert "'mock-model' is not in the allowed models" in error["message"]


def test_over_budget_call_is_refused_before_the_upstream(client, admin, upstream, store):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply(prompt_tokens=20, completion_tokens=20))
    admin("/customer/new", {"user_id": "capped", "max_budget": 0.05})

    assert chat(client, "capped").status_code == 200
    refused = chat(client, "capped")
    error = assert_openai_error(refused, 422, "budget_exceeded")
    assert error["message"] == "ExceededBudget: End User=capped over budget. Spend=0.06, Budget=0.05"
    assert len(upstream.calls) == 1
    assert chat(client, "someone-else").status_code == 200
    assert store.admin.get_customer("capped").spend_units == 60_000_000_000


def test_budget_status_code_is_configurable(make_app):
    client = make_app(litellm_settings={"budget_exceeded_status_code": 429}).test_client()
    client.post("/customer/new", json={"user_id": "zero", "max_budget": 0}, headers=AUTH)
    assert_openai_error(chat(client, "zero", model="mock-model"), 429, "budget_exceeded")


def test_max_budget_zero_refuses_every_call(client, admin, upstream):
    admin("/customer/new", {"user_id": "nothing", "max_budget": 0})
    assert_openai_error(chat(client, "nothing"), 422, "budget_exceeded")
    assert len(upstream.calls) == 0


def test_default_tier_applies_to_unknown_customers(make_app, upstream):
    client = make_app(litellm_settings={"max_end_user_budget_id": "free-tier"}).test_client()
    client.post("/budget/new", json={"budget_id": "free-tier", "max_budget": 0.05}, headers=AUTH)
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    assert chat(client, "stranger").status_code == 200
    assert_openai_error(chat(client, "stranger"), 422, "budget_exceeded")
    info = client.get("/customer/info?end_user_id=stranger", headers=AUTH).get_json()
    assert info["budget_id"] is None and info["spend"] == 0.06


def test_tier_limits_apply_to_each_customer_separately(client, admin, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    admin("/budget/new", {"budget_id": "pro", "max_budget": 0.05})
    for user in ("a", "b"):
        admin("/customer/new", {"user_id": user, "budget_id": "pro"})
        assert chat(client, user).status_code == 200
        assert chat(client, user).status_code == 422


def test_budget_window_resets_at_the_boundary(make_app, upstream):
    clock = Clock(1_795_795_201.0)  # 1 s past a 10-second boundary
    app = make_app()
    app.extensions["tollgate"].clock = clock
    client = app.test_client()
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    client.post(
        "/customer/new", json={"user_id": "windowed", "max_budget": 0.05, "budget_duration": "10s"}, headers=AUTH
    )
    assert chat(client, "windowed").status_code == 200
    assert chat(client, "windowed").status_code == 422

    clock.now = 1_795_795_209.999
    assert client.get("/customer/info?end_user_id=windowed", headers=AUTH).get_json()["spend"] == 0.06
    clock.now = 1_795_795_210.0
    info = client.get("/customer/info?end_user_id=windowed", headers=AUTH).get_json()
    assert info["spend"] == 0
    assert info["litellm_budget_table"]["budget_reset_at"] == "2026-11-27T16:00:20Z"
    assert chat(client, "windowed").status_code == 200
    assert client.get("/customer/info?end_user_id=windowed", headers=AUTH).get_json()["spend"] == 0.06


def test_rpm_limit_refuses_the_sixth_call_in_a_minute(client, admin, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    admin("/customer/new", {"user_id": "chatty", "rpm_limit": 5})
    for _ in range(5):
        assert chat(client, "chatty").status_code == 200
    refused = chat(client, "chatty")
    error = assert_openai_error(refused, 429, "rate_limit_error")
    assert error["message"].startswith("Rate limit exceeded for end_user: chatty. Limit type: requests.")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert len(upstream.calls) == 5


def test_tpm_limit_counts_settled_tokens(client, admin, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply(prompt_tokens=20, completion_tokens=20))
    admin("/customer/new", {"user_id": "wordy", "tpm_limit": 50})
    assert chat(client, "wordy").status_code == 200
    assert chat(client, "wordy").status_code == 200
    assert_openai_error(chat(client, "wordy"), 429, "rate_limit_error")


def test_allowed_model_region_routes_to_matching_deployments_only(make_app, upstream):
    models = [
        {
            "model_name": "gpt",
            "litellm_params": {
                "model": "openai/us-model",
                "api_base": "https://us.test/v1",
                "region_name": "us",
                **PRICED,
            },
        },
        {
            "model_name": "gpt",
            "litellm_params": {
                "model": "openai/eu-model",
                "api_base": "https://eu.test/v1",
                "region_name": "eu",
                **PRICED,
            },
        },
        {
            "model_name": "us-only",
            "litellm_params": {"model": "openai/x", "api_base": "https://us.test/v1", "region_name": "us", **PRICED},
        },
    ]
    client = make_app(model_list=models).test_client()
    client.post("/customer/new", json={"user_id": "european", "allowed_model_region": "eu"}, headers=AUTH)
    upstream.post("https://eu.test/v1/chat/completions", json=openai_reply())
    for _ in range(10):
        response = chat(client, "european", model="gpt")
        assert response.status_code == 200
        assert response.headers["x-litellm-model-region"] == "eu"
    assert_openai_error(chat(client, "european", model="us-only"), 400, param="model")


def test_default_model_serves_calls_that_name_none(client, admin, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    admin("/customer/new", {"user_id": "defaulted", "default_model": "gpt-test"})
    body = chat_body(user="defaulted")
    del body["model"]
    assert client.post("/chat/completions", json=body, headers=AUTH).status_code == 200
    assert json.loads(upstream.calls[0].request.body)["model"] == "gpt-test"


def test_per_model_budget_is_enforced_like_the_main_budget(client, admin, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    admin("/customer/new", {"user_id": "split", "model_max_budget": {"gpt-test": {"max_budget": 0.05}}})
    assert chat(client, "split", model="gpt-test").status_code == 200
    error = assert_openai_error(chat(client, "split", model="gpt-test"), 422, "budget_exceeded")
    assert "for model=gpt-test" in error["message"]
    assert chat(client, "split", model="mock-model").status_code == 200


def test_strict_enforcement_lowers_max_tokens_to_what_is_left(make_app, upstream):
    client = make_app(litellm_settings={"budget_enforcement": "strict"}).test_client()
    client.post("/customer/new", json={"user_id": "strict", "max_budget": 0.5}, headers=AUTH)
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply(prompt_tokens=20, completion_tokens=20))
    response = chat(client, "strict", max_tokens=1000)
    assert response.status_code == 200
    sent = json.loads(upstream.calls[0].request.body)
    prompt_bound = len(json.dumps({"messages": chat_body()["messages"]}).encode())
    expected = (Decimal("0.5") - prompt_bound * Decimal("0.001")) // Decimal("0.002")
    assert sent["max_tokens"] == int(expected) < 1000


def test_strict_enforcement_refuses_a_call_that_cannot_fit(make_app, upstream):
    client = make_app(litellm_settings={"budget_enforcement": "strict"}).test_client()
    client.post("/customer/new", json={"user_id": "poor", "max_budget": 0.01}, headers=AUTH)
    assert_openai_error(chat(client, "poor"), 422, "budget_exceeded")
    assert len(upstream.calls) == 0


def test_failed_upstream_call_releases_its_reservation(client, admin, upstream, store):
    admin("/customer/new", {"user_id": "unlucky", "max_budget": 0.1})
    upstream.post(f"{UPSTREAM}/chat/completions", status=500, json={"error": {"message": "down"}})
    for _ in range(3):
        assert chat(client, "unlucky", max_tokens=10).status_code == 502
    [(reserved,)] = sql_rows(store, "SELECT reserved_units FROM spend_accounts WHERE user_id = 'unlucky'")
    assert int(reserved) == 0
    assert sql_rows(store, "SELECT COUNT(*) FROM reservations") == [(0,)]


def test_reservation_of_a_call_that_never_settled_expires(make_app, upstream):
    clock = Clock(1_795_795_201.0)
    app = make_app()
    app.extensions["tollgate"].clock = clock
    store = app.extensions["tollgate"].store
    client = app.test_client()
    client.post("/customer/new", json={"user_id": "orphaned", "max_budget": 0.1}, headers=AUTH)
    from spend.budgets import Estimate, Limit
    from spend.store import AdmissionRequest

    # A worker killed mid-call leaves its reservation behind: all of the budget.
    store.ledger.admit(
        AdmissionRequest(
            "dead-call",
            "orphaned",
            (Limit("", 100_000_000_000),),
            Estimate(10**12, 0, 1),
            now=clock.now,
            expires_at=clock.now + 660,
        )
    )
    assert_openai_error(chat(client, "orphaned"), 422, "budget_exceeded")
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    clock.now += 661
    assert chat(client, "orphaned").status_code == 200
