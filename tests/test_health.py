"""Readiness and the things it reports (SPEC §11): no deployment served, draining, a default
budget tier that does not exist (whose customers are refused rather than served without a limit)."""

from __future__ import annotations

import logging

import pytest

from tests.helpers import AUTH, UPSTREAM, assert_openai_error, chat_body, openai_reply

MISSING_KEY = [{"model_name": "gpt", "litellm_params": {"model": "openai/gpt-4o", "api_key": "os.environ/UNSET_KEY_X"}}]


def test_readiness_is_503_when_every_deployment_was_skipped(make_app, caplog):
    with caplog.at_level(logging.ERROR, logger="tollgate"):
        client = make_app(model_list=MISSING_KEY).test_client()
    error = assert_openai_error(client.get("/health/readiness"), 503, "service_unavailable")
    assert "No model is served" in error["message"]
    assert any("no deployment is served" in record.getMessage() for record in caplog.records)
    assert client.get("/health/liveness").status_code == 200


def test_while_draining_readiness_and_new_requests_get_503_at_once_but_liveness_does_not(app):
    client = app.test_client()
    app.extensions["tollgate"].lifecycle.begin_drain()
    assert "draining" in assert_openai_error(client.get("/health/readiness"), 503, "service_unavailable")["message"]
    response = client.post("/chat/completions", json=chat_body(model="mock-model"), headers=AUTH)
    assert_openai_error(response, 503, "service_unavailable")
    assert response.headers["retry-after"] == "1"
    assert client.get("/health/liveliness").get_json() == "I'm alive!"


def test_requests_in_flight_are_counted_until_their_body_is_done(app):
    lifecycle = app.extensions["tollgate"].lifecycle
    response = app.test_client().post(
        "/chat/completions", json=chat_body(model="mock-model", stream=True), headers=AUTH, buffered=False
    )
    assert lifecycle.in_flight == 1
    assert not lifecycle.wait_idle(0.1)
    response.get_data()
    response.close()
    assert lifecycle.in_flight == 0 and lifecycle.wait_idle(0.1)


TIER = {"litellm_settings": {"max_end_user_budget_id": "free-tier"}}


@pytest.fixture
def tierless(make_app, caplog):
    with caplog.at_level(logging.ERROR, logger="tollgate"):
        client = make_app(**TIER).test_client()
    return client


def test_a_default_tier_that_does_not_exist_is_reported_at_start_up_and_by_readiness(tierless, caplog):
    started = [record.getMessage() for record in caplog.get_records("setup")]
    assert any("'free-tier'" in line and "does not exist" in line for line in started)
    ready = tierless.get("/health/readiness")
    assert ready.status_code == 200
    [warning] = ready.get_json()["warnings"]
    assert "max_end_user_budget_id: budget tier 'free-tier' does not exist" in warning


def test_a_default_tier_that_does_not_exist_refuses_customers_without_a_budget_instead_of_unlimited(tierless, upstream):
    response = tierless.post("/chat/completions", json=chat_body(user="stranger"), headers=AUTH)
    error = assert_openai_error(response, 503, "budget_tier_missing")
    assert "'free-tier'" in error["message"] and "POST /budget/new" in error["message"]
    assert upstream.calls == []
    assert tierless.get("/customer/info?end_user_id=stranger", headers=AUTH).status_code == 404


def test_customers_with_their_own_budget_and_calls_without_a_customer_are_still_served(tierless, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    tierless.post("/customer/new", json={"user_id": "own", "max_budget": 10}, headers=AUTH)
    assert tierless.post("/chat/completions", json=chat_body(user="own"), headers=AUTH).status_code == 200
    assert tierless.post("/chat/completions", json=chat_body(user=None), headers=AUTH).status_code == 200


def test_creating_the_missing_default_tier_brings_its_limit_into_force(tierless, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    tierless.post("/budget/new", json={"budget_id": "free-tier", "max_budget": 0.05}, headers=AUTH)
    assert tierless.get("/health/readiness").get_json()["warnings"] == []
    assert tierless.post("/chat/completions", json=chat_body(user="stranger"), headers=AUTH).status_code == 200
    assert_openai_error(tierless.post("/chat/completions", json=chat_body(user="stranger"), headers=AUTH), 422)
