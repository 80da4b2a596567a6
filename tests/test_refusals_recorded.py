"""Refused and failed calls are kept: a log line and a spend-log row (status `failure`, cost 0, the
error's type) that counts as failed in the daily activity. Bad input and a bad proxy key are not
calls: they leave no row. A store that cannot record a refusal does not turn it into a 500."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.helpers import AUTH, PRICED, UPSTREAM, UPSTREAM_KEY, assert_openai_error, chat_body, openai_reply

REGIONAL = [
    {"model_name": "gpt-test",
     "litellm_params": {"model": "openai/gpt-test", "api_base": UPSTREAM, "api_key": UPSTREAM_KEY, "region_name": "us",
                        **PRICED}},
    {"model_name": "free", "litellm_params": {"model": "openai/free", "api_base": UPSTREAM, "api_key": UPSTREAM_KEY}},
]  # fmt: skip


def admin(client, path, body):
    response = client.post(path, json=body, headers=AUTH)
    assert response.status_code == 200, response.get_json()


def chat(client, user="cust-1", model="gpt-test", **extra):
    return client.post("/chat/completions", json=chat_body(user=user, model=model, **extra), headers=AUTH)


def rows(client, customer=None):
    query = f"?end_user={customer}" if customer else ""
    return client.get(f"/spend/logs{query}", headers=AUTH).get_json()


def failed_today(client) -> int:
    today = datetime.now(UTC).date().isoformat()
    body = client.get(f"/customer/daily/activity?start_date={today}&end_date={today}", headers=AUTH).get_json()
    return body["metadata"]["total_failed_requests"]


def blocked(client):
    admin(client, "/customer/block", {"user_ids": ["cust-1"]})


def allowlisted(client):
    admin(client, "/customer/new", {"user_id": "cust-1", "models": ["mock-model"]})


def regional(client):
    admin(client, "/customer/new", {"user_id": "cust-1", "allowed_model_region": "eu"})


def broke(client):
    admin(client, "/customer/new", {"user_id": "cust-1", "max_budget": 0})


def rate_limited(client):
    admin(client, "/customer/new", {"user_id": "cust-1", "rpm_limit": 1})
    assert chat(client, model="mock-model").status_code == 200


REFUSALS = [
    pytest.param({}, blocked, {}, 400, "invalid_request_error", id="blocked"),
    pytest.param({"general_settings": {"enforce_user_param": True}}, None, {"user": None}, 401, "auth_error",
                 id="no-user"),
    pytest.param({}, allowlisted, {}, 403, "customer_model_access_denied", id="model-not-allowed"),
    pytest.param({}, regional, {}, 400, "invalid_request_error", id="region"),
    pytest.param({}, broke, {}, 422, "budget_exceeded", id="budget"),
    pytest.param({"litellm_settings": {"budget_exceeded_status_code": 402}}, broke, {}, 402, "budget_exceeded",
                 id="budget-status"),
    pytest.param({}, rate_limited, {"model": "mock-model"}, 429, "rate_limit_error", id="rate-limit"),
    pytest.param({"litellm_settings": {"max_end_user_budget_id": "missing-tier"}}, None, {}, 503,
                 "budget_tier_missing", id="tier-missing"),
    pytest.param({"litellm_settings": {"block_requests_for_models_without_pricing": True}}, None, {"model": "free"},
                 403, "model_cost_map_missing", id="unpriced"),
]  # fmt: skip


@pytest.mark.parametrize(("sections", "prepare", "call", "status", "kind"), REFUSALS)
def test_a_refused_call_is_logged_and_kept_as_a_failure(make_app, caplog, sections, prepare, call, status, kind):
    client = make_app(model_list=REGIONAL + [_mock()], **sections).test_client()
    if prepare is not None:
        prepare(client)
    before = failed_today(client)
    caplog.set_level("INFO", logger="tollgate.calls")
    arguments = {"user": "cust-1", "model": "gpt-test", **call}
    response = chat(client, arguments.pop("user"), arguments.pop("model"))
    error = assert_openai_error(response, status, kind)
    request_id = _refusal_line(caplog, status)
    [row] = [row for row in rows(client) if row["request_id"] == request_id]
    assert (row["status"], row["spend"], row["end_user"]) == ("failure", 0, None if kind == "auth_error" else "cust-1")
    assert row["error"] == f"{kind}: {error['message']}"
    assert row["model_group"] == call.get("model", "gpt-test") and row["model"] == ""
    assert failed_today(client) == before + 1
    today = datetime.now(UTC).date().isoformat()
    day = client.get(f"/customer/daily/activity?start_date={today}&end_date={today}", headers=AUTH).get_json()
    breakdown = day["results"][0]["breakdown"]
    assert breakdown["providers"]["unknown"]["metrics"]["failed_requests"] == 1
    assert breakdown["model_groups"][row["model_group"]]["metrics"]["failed_requests"] >= 1


def test_the_refusal_log_line_names_call_customer_model_status_and_reason(make_app, caplog):
    client = make_app()
    client = client.test_client()
    blocked(client)
    caplog.set_level("INFO", logger="tollgate.calls")
    chat(client)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]
    assert 'customer="cust-1" model="gpt-test" status=400 error_type=invalid_request_error' in line
    assert 'reason="User blocked from making LLM API Calls. User=cust-1"' in line
    assert UPSTREAM_KEY not in caplog.text


@pytest.mark.parametrize(
    "send",
    [
        lambda client: client.post("/chat/completions", data="{not json", headers=AUTH),
        lambda client: chat(client, model="no-such-model"),
        lambda client: chat(client, user="x" * 300),
        lambda client: client.post("/chat/completions", json={"model": "gpt-test", "user": "cust-1"}, headers=AUTH),
    ],
    ids=["malformed-json", "unknown-model", "bad-customer-id", "no-messages"],
)
def test_bad_input_is_not_a_call_and_leaves_no_row(client, send):
    assert_openai_error(send(client), 400)
    assert rows(client) == [] and failed_today(client) == 0


def test_a_bad_proxy_key_is_not_a_call(client, caplog):
    caplog.set_level("INFO")
    response = client.post("/chat/completions", json=chat_body(), headers={"Authorization": "Bearer sk-wrong"})
    assert_openai_error(response, 401)
    assert rows(client) == [] and failed_today(client) == 0
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("unauthenticated ")]
    assert "path=/chat/completions reason=Authentication Error, Invalid proxy server token passed" in line
    assert "sk-wrong" not in caplog.text


def test_an_upstream_failure_counts_as_a_failed_request(client, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", status=500, json={"error": {"message": "down"}})
    assert chat(client).status_code == 502
    [row] = rows(client, "cust-1")
    assert (row["status"], row["spend"]) == ("failure", 0)
    assert failed_today(client) == 1


def test_a_refusal_the_store_cannot_record_is_still_answered(client, store, caplog):
    blocked(client)
    store.engine.write(lambda tx: tx.execute("DROP TABLE daily_activity"))  # the refusal's write now fails
    caplog.set_level("INFO", logger="tollgate.calls")
    assert_openai_error(chat(client), 400, "invalid_request_error")
    assert "refusal not recorded" in caplog.text
    assert rows(client) == []  # all or nothing: no spend-log row without its rollup


def test_served_calls_are_not_refusals(client, upstream, caplog):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    caplog.set_level("INFO", logger="tollgate.calls")
    assert chat(client).status_code == 200
    assert not [r for r in caplog.records if r.getMessage().startswith("refused ")]
    assert failed_today(client) == 0


def _mock() -> dict:
    return {"model_name": "mock-model", "litellm_params": {"model": "mock/mock-model", **PRICED}}


def _refusal_line(caplog, status: int) -> str:
    """The request id of the one refusal logged, checking its status."""
    [message] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]
    assert f" status={status} " in message
    return message.split("request_id=")[1].split()[0]


def test_a_refusal_keeps_only_a_model_name_it_can_store(make_app):
    client = make_app(general_settings={"enforce_user_param": True}).test_client()
    for model in (12, "x" * 300, "bad\nname"):
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        assert_openai_error(client.post("/chat/completions", json=body, headers=AUTH), 401, "auth_error")
    assert [row["model_group"] for row in rows(client)] == ["", "", ""]
