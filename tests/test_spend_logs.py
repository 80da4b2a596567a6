"""`GET /spend/logs`: every call's row, filtered, paginated, as JSON or CSV."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest

from tests.helpers import AUTH, UPSTREAM, anthropic_reply, assert_openai_error, chat_body, openai_reply


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


ANTHROPIC_REPLY = anthropic_reply("msg_01XFDUDYJgAACzvnptvVoYEL")
RESPONSE = {
    "id": "resp_67ccd2bed1ec8190b14f964abc054267",
    "object": "response",
    "status": "completed",
    "model": "gpt-test",
    "output": [],
    "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
}


@pytest.mark.parametrize(
    ("path", "upstream_url", "answer", "body"),
    [
        ("/chat/completions", f"{UPSTREAM}/chat/completions", openai_reply(), chat_body(user="finder")),
        ("/v1/responses", f"{UPSTREAM}/responses", RESPONSE, {"model": "gpt-test", "input": "hi", "user": "finder"}),
        ("/chat/completions", "https://api.anthropic.com/v1/messages", ANTHROPIC_REPLY,
         chat_body(model="claude", user="finder")),
    ],
)  # fmt: skip
def test_request_id_finds_a_call_by_its_call_id_or_its_upstream_response_id(
    make_app, upstream, path, upstream_url, answer, body
):
    models = [
        {
            "model_name": "gpt-test",
            "litellm_params": {"model": "openai/gpt-test", "api_base": UPSTREAM, "api_key": "k"},
        },
        {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-3-5-haiku-20241022", "api_key": "k"}},
    ]
    client = make_app(model_list=models).test_client()
    upstream.post(upstream_url, json=answer)
    upstream.post(f"{UPSTREAM}/chat/completions", json={**openai_reply(), "id": "chatcmpl-other"})
    call_id = client.post(path, json=body, headers=AUTH).headers["x-litellm-call-id"]
    client.post("/chat/completions", json=chat_body(user="someone-else"), headers=AUTH)

    for query in (call_id, answer["id"]):
        response = logs(client, f"?request_id={query}")
        [row] = response.get_json()
        assert (row["request_id"], row["response_id"], row["end_user"]) == (call_id, answer["id"], "finder")
        assert response.headers["x-total-count"] == "1"
    assert logs(client, "?request_id=chatcmpl-nothing-like-it").get_json() == []
    as_csv = client.get(f"/spend/logs?format=csv&request_id={answer['id']}", headers=AUTH).get_data(as_text=True)
    assert [row["response_id"] for row in csv.DictReader(io.StringIO(as_csv))] == [answer["id"]]


def test_request_id_with_a_nul_character_is_400(client):
    assert_openai_error(logs(client, "?request_id=abc%00"), 400, "invalid_request_error", "request_id")
