"""Bad input gets a clear error in the OpenAI envelope, charges nothing and leaves the server healthy."""

from __future__ import annotations

import json

import pytest

from tests.fake_upstream import FakeUpstream
from tests.helpers import AUTH, PRICED, UPSTREAM, assert_openai_error, chat_body
from tests.servers import free_port

STEADY = "steady-customer"


@pytest.fixture
def baseline(client, store):
    """One charged call before the bad one; afterwards spend must be unchanged and calls must work."""
    assert (
        client.post("/chat/completions", json=chat_body(model="mock-model", user=STEADY), headers=AUTH).status_code
        == 200
    )
    before = store.admin.get_customer(STEADY).spend_units
    rows = charged_rows(store)
    yield
    assert store.admin.get_customer(STEADY).spend_units == before
    assert charged_rows(store) == rows
    after = client.post("/chat/completions", json=chat_body(model="mock-model", user="after"), headers=AUTH)
    assert after.status_code == 200, "server unhealthy after bad input"


def charged_rows(store) -> int:
    return sum(1 for row in store.ledger.spend_logs(STEADY) if row.status == "success")


def post_raw(client, data, **headers):
    return client.post("/chat/completions", data=data, headers={**AUTH, "Content-Type": "application/json", **headers})


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b'{"model": "mock-model", "messages": [', "not valid JSON"),
        (b"[1, 2, 3]", "must be a JSON object"),
        (b'"just a string"', "must be a JSON object"),
        (b"", "empty"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b'{"model": "mock-model", "messages": [], "temperature": NaN}', "NaN is not a JSON number"),
        (b'{"model": "mock-model", "messages": [], "top_p": -Infinity}', "-Infinity is not a JSON number"),
    ],
)
def test_unparsable_body_is_400(client, baseline, data, fragment):
    error = assert_openai_error(post_raw(client, data), 400, "invalid_request_error")
    assert fragment in error["message"]


@pytest.mark.parametrize("messages", ["hello", {"role": "user"}, None, 3])
def test_messages_not_a_list_is_400(client, baseline, messages):
    body = {"model": "mock-model", "messages": messages, "user": STEADY}
    assert_openai_error(
        client.post("/chat/completions", json=body, headers=AUTH), 400, "invalid_request_error", "messages"
    )


@pytest.mark.parametrize("model", [None, "", "gpt-nope", 42])
def test_missing_or_unknown_model_is_400_listing_configured_models(client, baseline, model):
    body = chat_body(user=STEADY)
    body["model"] = model
    error = assert_openai_error(client.post("/chat/completions", json=body, headers=AUTH), 400, param="model")
    assert "gpt-test" in error["message"] and "mock-model" in error["message"]
    if model:
        assert f"model={model}" in error["message"]


def test_body_over_ten_mib_is_413(client, baseline):
    huge = json.dumps(chat_body(user=STEADY, model="mock-model", padding="x" * (10 * 1024 * 1024))).encode()
    assert_openai_error(post_raw(client, huge), 413, "invalid_request_error")


@pytest.mark.parametrize("customer", ["c" * 300, "line\nbreak", "bell\x07", "\x00"])
def test_unusable_customer_id_is_400(client, baseline, customer, store):
    response = client.post("/chat/completions", json=chat_body(model="mock-model", user=customer), headers=AUTH)
    assert_openai_error(response, 400, "invalid_request_error", "user")
    customers, _ = store.admin.list_customers(0, 100, None)
    assert customer not in [stored.user_id for stored in customers]


@pytest.mark.parametrize("customer", ["'; DROP TABLE customers; --", "Robert'); DELETE FROM spend_logs;--", "1 OR 1=1"])
def test_sql_looking_id_is_stored_verbatim(client, baseline, customer, store):
    assert (
        client.post("/chat/completions", json=chat_body(model="mock-model", user=customer), headers=AUTH).status_code
        == 200
    )
    info = client.get("/customer/info", query_string={"end_user_id": customer}, headers=AUTH).get_json()
    assert info["user_id"] == customer
    assert store.admin.get_customer(STEADY) is not None


@pytest.mark.parametrize("customer", ["客户-42", "müller", "😀 emoji", "עברית"])
def test_non_ascii_id_round_trips(client, baseline, customer):
    assert (
        client.post("/chat/completions", json=chat_body(model="mock-model", user=customer), headers=AUTH).status_code
        == 200
    )
    response = client.get("/customer/info", query_string={"end_user_id": customer}, headers=AUTH)
    assert response.get_json()["user_id"] == customer
    assert customer.encode() in response.data


def test_upstream_500_is_502_and_charges_nothing(client, baseline, upstream, store):
    upstream.post(f"{UPSTREAM}/chat/completions", status=500, json={"error": {"message": "boom"}})
    response = client.post("/chat/completions", json=chat_body(user=STEADY), headers=AUTH)
    error = assert_openai_error(response, 502, "upstream_error")
    assert "500" in error["message"]
    assert store.ledger.spend_logs()[0].status == "failure"


def test_upstream_non_json_is_502(client, baseline, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", body="<html>gateway</html>", content_type="text/html")
    assert_openai_error(
        client.post("/chat/completions", json=chat_body(user=STEADY), headers=AUTH), 502, "upstream_error"
    )


def test_upstream_4xx_keeps_its_status_type_and_message_and_says_where_it_came_from(client, baseline, upstream):
    error_body = {
        "error": {"message": "This model's maximum context length is 8192 tokens", "type": "invalid_request_error"}
    }
    upstream.post(f"{UPSTREAM}/chat/completions", status=400, json=error_body)
    response = client.post("/chat/completions", json=chat_body(user=STEADY), headers=AUTH)
    error = assert_openai_error(response, 400, "invalid_request_error")
    assert error["message"].startswith(f"Upstream 'gpt-test' (deployment {response.headers['x-litellm-model-id']}) ")
    assert error["message"].endswith("returned HTTP 400: This model's maximum context length is 8192 tokens")
    assert response.headers["x-tollgate-upstream-status"] == "400"


def test_upstream_connection_refused_is_502(make_app, store):
    models = [
        {
            "model_name": "down",
            "litellm_params": {"model": "openai/down", "api_base": f"http://127.0.0.1:{free_port()}/v1", **PRICED},
        }
    ]
    client = make_app(model_list=models).test_client()
    error = assert_openai_error(
        client.post("/chat/completions", json=chat_body(model="down"), headers=AUTH), 502, "upstream_error"
    )
    assert "127.0.0.1" not in error["message"]
    assert client.get("/customer/info?end_user_id=cust-1", headers=AUTH).status_code == 404


def test_upstream_timeout_is_504_and_charges_nothing(make_app):
    with FakeUpstream(delay_ms=3000) as slow:
        models = [
            {
                "model_name": "slow",
                "litellm_params": {"model": "openai/slow", "api_base": slow.url, "timeout": 0.3, **PRICED},
            }
        ]
        client = make_app(model_list=models).test_client()
        response = client.post("/chat/completions", json=chat_body(model="slow"), headers=AUTH)
    assert_openai_error(response, 504, "timeout")
    assert client.get("/customer/info?end_user_id=cust-1", headers=AUTH).status_code == 404


def test_unknown_route_is_404(client):
    assert_openai_error(client.get("/no/such/route", headers=AUTH), 404, "not_found")
    assert_openai_error(client.post("/v1/nothing"), 404, "not_found")


def test_wrong_method_is_405(client):
    assert_openai_error(client.get("/chat/completions", headers=AUTH), 405)
    assert_openai_error(client.post("/models", headers=AUTH), 405)


def test_unexpected_failure_is_500_without_details(make_app, monkeypatch, caplog):
    app = make_app()
    store = app.extensions["tollgate"].store

    def broken(record, settlement=None):
        raise RuntimeError("disk on fire at /work/secret/path")

    monkeypatch.setattr(store.ledger, "record_call", broken)
    response = app.test_client().post("/chat/completions", json=chat_body(model="mock-model"), headers=AUTH)
    error = assert_openai_error(response, 500, "internal_error")
    assert "disk on fire" not in error["message"]
    assert "disk on fire" in caplog.text
    assert response.get_json()["error"]["message"].endswith(caplog.records[-1].getMessage().split("request_id=")[1])


def test_customer_info_404_envelope(client):
    error = assert_openai_error(
        client.get("/customer/info?end_user_id=ghost", headers=AUTH), 404, "not_found", "end_user_id"
    )
    assert error["message"] == "End User Id=ghost does not exist in db"
    assert_openai_error(client.get("/end_user/info?end_user_id=ghost", headers=AUTH), 404, "not_found", "end_user_id")


def test_customer_info_without_id_is_400(client):
    assert_openai_error(client.get("/customer/info", headers=AUTH), 400, "invalid_request_error", "end_user_id")


def test_stream_flag_that_is_not_a_boolean_is_400(client, baseline):
    body = chat_body(user=STEADY, model="mock-model", stream="yes")
    assert_openai_error(
        client.post("/chat/completions", json=body, headers=AUTH), 400, "invalid_request_error", "stream"
    )


@pytest.mark.parametrize(
    ("method", "path", "request_args"),
    [
        ("get", "/customer/info", {"query_string": {"end_user_id": "a\x00b"}}),
        ("get", "/customer/list", {"query_string": {"search": "\x00"}}),
        ("get", "/spend/logs", {"query_string": {"end_user": "\x00"}}),
        ("post", "/customer/new", {"json": {"user_id": "nul-alias", "alias": "a\x00"}}),
        ("post", "/budget/new", {"json": {"budget_id": "tier\x00"}}),
        ("post", "/budget/info", {"json": {"budgets": ["tier\x00"]}}),
        ("post", "/webhooks/requeue", {"json": {"event_ids": ["evt\x00"]}}),
    ],
)
def test_a_nul_character_in_an_id_or_text_is_400_on_every_engine(client, baseline, store, method, path, request_args):
    response = getattr(client, method)(path, headers=AUTH, **request_args)
    assert_openai_error(response, 400, "invalid_request_error")
    assert store.admin.get_customer("nul-alias") is None and store.admin.get_budget("tier") is None
