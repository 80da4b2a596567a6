"""`GET /spend/logs`: every call's row, filtered, paginated, as JSON or CSV."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest

from tests.helpers import AUTH, UPSTREAM, assert_openai_error, chat_body, openai_reply


@pytest.fixture
def calls(client, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply(prompt_tokens=20, completion_tokens=20))
    for user, model in [("alice", "gpt-test"), ("alice", "mock-model"), ("bob", "gpt-test")]:
        assert client.post("/chat/completions", json=chat_body(user=user, model=model), headers=AUTH).status_code == 200


def logs(client, query=""):
    return client.get(f"/spend/logs{query}", headers=AUTH)


def test_rows_carry_customer_model_tokens_and_cost(client, calls):
    response = logs(client, "?end_user=bob")
    [row] = response.get_json()
    assert response.headers["x-total-count"] == "1"
    assert (row["end_user"], row["model_group"], row["model"], row["status"]) == (
        "bob",
        "gpt-test",
        "openai/gpt-test",
        "success",
    )
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"], row["spend"]) == (20, 20, 40, 0.06)
    assert row["estimated"] is False and row["startTime"] <= row["endTime"]


def test_filters_combine(client, calls):
    assert len(logs(client).get_json()) == 3
    assert len(logs(client, "?customer_id=alice").get_json()) == 2
    assert [r["end_user"] for r in logs(client, "?model=gpt-test").get_json()] == ["bob", "alice"]
    assert len(logs(client, "?model=openai/gpt-test&end_user=alice").get_json()) == 1
    today = logs(client).get_json()[0]["endTime"][:10]
    assert len(logs(client, f"?start_date={today}&end_date={today}").get_json()) == 3
    assert logs(client, "?end_date=2000-01-01").get_json() == []
    assert logs(client, "?start_date=2999-01-01").get_json() == []


def test_pagination_reports_the_total(client, calls):
    first = logs(client, "?page_size=2")
    second = logs(client, "?page_size=2&page=2")
    assert first.headers["x-total-count"] == second.headers["x-total-count"] == "3"
    ids = [r["request_id"] for r in first.get_json() + second.get_json()]
    assert len(set(ids)) == 3


@pytest.mark.parametrize("ask", [{"query": "?format=csv"}, {"headers": {"Accept": "text/csv"}}])
def test_csv_export(client, calls, ask):
    response = client.get(f"/spend/logs{ask.get('query', '')}", headers={**AUTH, **ask.get("headers", {})})
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 3
    as_json = {row["request_id"]: row for row in logs(client).get_json()}
    for row in rows:
        assert Decimal(row["spend"]) == Decimal(repr(as_json[row["request_id"]]["spend"]))
        assert (row["end_user"], row["model"]) == (
            as_json[row["request_id"]]["end_user"],
            as_json[row["request_id"]]["model"],
        )


@pytest.mark.parametrize(
    "query", ["?start_date=yesterday", "?end_date=2026-13-01", "?page_size=0", "?page=x", "?page_size=1001"]
)
def test_bad_filters_are_400(client, query):
    assert_openai_error(logs(client, query), 400)
