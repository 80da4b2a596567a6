"""Money past the old int64 pico-dollar ceiling ($9.2 M), through the API, on the suite's engine."""

from __future__ import annotations

from decimal import Decimal

from spend.store import SpendLogFilter
from tests.helpers import AUTH, UPSTREAM, UPSTREAM_KEY, chat_body, openai_reply

# $1,000 a prompt token: a call with 10,000 prompt tokens costs $10,000,000.
EXPENSIVE = [
    {
        "model_name": "gpt-test",
        "litellm_params": {
            "model": "openai/gpt-test",
            "api_base": UPSTREAM,
            "api_key": UPSTREAM_KEY,
            "input_cost_per_token": 1000,
            "output_cost_per_token": 0.000000000001,
        },
    }
]


def test_a_budget_of_ten_million_dollars_is_stored_and_shown_exactly(client):
    created = client.post("/customer/new", json={"user_id": "whale", "max_budget": 10_000_000}, headers=AUTH)
    assert created.status_code == 200, created.get_json()
    info = client.get("/customer/info", query_string={"end_user_id": "whale"}, headers=AUTH).get_json()
    assert info["litellm_budget_table"]["max_budget"] == 10_000_000
    tier = client.post("/budget/new", json={"budget_id": "huge", "max_budget": 50_000_000}, headers=AUTH)
    assert tier.status_code == 200 and tier.get_json()["max_budget"] == 50_000_000


def test_a_call_costing_more_than_nine_million_dollars_is_charged_exactly(make_app, upstream):
    client = make_app(model_list=EXPENSIVE).test_client()
    for _ in range(2):
        upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply(prompt_tokens=10_000, completion_tokens=1))
    for _ in range(2):
        response = client.post("/chat/completions", json=chat_body(user="whale"), headers=AUTH)
        assert response.status_code == 200, response.get_json()
        assert Decimal(response.headers["x-litellm-response-cost"]) == Decimal("10000000.000000000001")
    store = client.application.extensions["tollgate"].store
    assert store.admin.get_customer("whale").spend_units == 2 * (10_000_000 * 10**12 + 1)
    assert [row.cost_units for row in store.ledger.spend_logs("whale")] == [10_000_000 * 10**12 + 1] * 2
    assert store.ledger.count_spend_logs(SpendLogFilter("whale")) == 2
    info = client.get("/customer/info", query_string={"end_user_id": "whale"}, headers=AUTH)
    assert '"spend":20000000.000000000002,' in info.get_data(as_text=True)
    logs = client.get("/spend/logs", query_string={"end_user": "whale"}, headers=AUTH).get_data(as_text=True)
    assert logs.count('"spend":10000000.000000000001,') == 2
    csv = client.get("/spend/logs", query_string={"end_user": "whale", "format": "csv"}, headers=AUTH)
    assert csv.get_data(as_text=True).count(",10000000.000000000001,") == 2
