"""`GET /customer/daily/activity` (and `/end_user/…`) and `POST /global/spend/end_users`: LiteLLM's
shapes, read from the daily rollup the calls write, money exact, bad input a 400."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from providers.base import Usage
from spend.store import CallRecord
from tests.helpers import AUTH, UPSTREAM, assert_openai_error, chat_body, openai_reply

METRICS = ["spend", "prompt_tokens", "completion_tokens", "total_tokens", "cache_read_input_tokens",
           "cache_creation_input_tokens", "api_requests", "successful_requests", "failed_requests"]  # fmt: skip
METADATA = ["total_spend", "total_prompt_tokens", "total_completion_tokens", "total_tokens", "total_api_requests",
            "total_successful_requests", "total_failed_requests", "total_cache_read_input_tokens",
            "total_cache_creation_input_tokens", "page", "total_pages", "has_more"]  # fmt: skip
HUGE = 10**20 + 3


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def days_ago(n: int) -> str:
    return (datetime.now(UTC).date() - timedelta(days=n)).isoformat()


def record(store, customer, day, cost, model="gpt-test", status="success", **usage) -> None:
    """A call settled on `day` (noon UTC), through the ledger the calls use."""
    moment = datetime.fromisoformat(f"{day}T12:00:00+00:00").timestamp()
    store.ledger.record_call(
        CallRecord(
            str(uuid.uuid4()),
            customer,
            model,
            f"openai/{model}",
            "dep",
            Usage(**usage),
            cost,
            moment,
            moment,
            status=status,
        )  # fmt: skip
    )


def activity(client, query: str, prefix: str = "customer"):
    return client.get(f"/{prefix}/daily/activity?{query}", headers=AUTH)


@pytest.fixture
def served(client, upstream):
    """Today: alice calls gpt-test and mock-model, bob gpt-test, and one call names no customer."""
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply(prompt_tokens=20, completion_tokens=20))
    for user, model in [("alice", "gpt-test"), ("alice", "mock-model"), ("bob", "gpt-test"), (None, "gpt-test")]:
        response = client.post("/chat/completions", json=chat_body(user=user, model=model), headers=AUTH)
        assert response.status_code == 200


@pytest.mark.parametrize("prefix", ["customer", "end_user"])
def test_a_day_has_litellms_metrics_and_breakdowns(client, served, prefix):
    response = activity(client, f"start_date={today()}&end_date={today()}", prefix)
    assert response.status_code == 200
    body = response.get_json()
    [day] = body["results"]
    assert list(body) == ["results", "metadata"] and list(body["metadata"]) == METADATA
    assert day["date"] == today() and list(day["metrics"]) == METRICS
    assert set(day["breakdown"]) == {"models", "model_groups", "providers", "entities", "api_keys", "endpoints",
                                     "mcp_servers"}  # fmt: skip
    assert set(day["breakdown"]["models"]) == {"openai/gpt-test", "mock/mock-model"}
    assert set(day["breakdown"]["providers"]) == {"openai", "mock"}
    assert set(day["breakdown"]["entities"]) == {"alice", "bob", "Unassigned"}
    bob = day["breakdown"]["entities"]["bob"]
    assert bob == {
        "metrics": {"spend": 0.06, "prompt_tokens": 20, "completion_tokens": 20, "total_tokens": 40,
                    "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0, "api_requests": 1,
                    "successful_requests": 1, "failed_requests": 0},
        "metadata": {"alias": None},
    }  # fmt: skip
    assert day["breakdown"]["entities"]["Unassigned"]["metadata"] == {}
    assert day["metrics"]["api_requests"] == day["metrics"]["successful_requests"] == 4
    assert body["metadata"]["total_api_requests"] == 4
    assert (body["metadata"]["page"], body["metadata"]["total_pages"], body["metadata"]["has_more"]) == (1, 1, False)


def test_spend_matches_the_spend_log_exactly(client, served):
    logged = client.get("/spend/logs", headers=AUTH).get_json()
    text = activity(client, f"start_date={today()}&end_date={today()}").get_data(as_text=True)
    body = json.loads(text, parse_float=str)
    total = sum(Decimal(str(row["spend"])) for row in logged)
    assert Decimal(body["metadata"]["total_spend"]) == Decimal(body["results"][0]["metrics"]["spend"]) == total


def test_customers_and_models_filter_the_activity(client, served):
    span = f"start_date={today()}&end_date={today()}"
    client.post("/customer/update", json={"user_id": "alice", "alias": "Alice Ltd"}, headers=AUTH)
    [day] = activity(client, f"{span}&end_user_ids=alice").get_json()["results"]
    assert day["breakdown"]["entities"]["alice"]["metadata"] == {"alias": "Alice Ltd"}
    [day] = activity(client, f"{span}&end_user_ids=alice,%20bob").get_json()["results"]
    assert set(day["breakdown"]["entities"]) == {"alice", "bob"} and day["metrics"]["api_requests"] == 3
    [day] = activity(client, f"{span}&exclude_end_user_ids=alice").get_json()["results"]
    assert set(day["breakdown"]["entities"]) == {"bob", "Unassigned"}
    [day] = activity(client, f"{span}&model=mock-model").get_json()["results"]
    assert set(day["breakdown"]["entities"]) == {"alice"}
    assert activity(client, f"{span}&end_user_ids=nobody").get_json()["results"] == []


def test_days_are_newest_first_and_paged_with_totals_over_every_page(client, store):
    record(store, "acme", days_ago(2), HUGE, prompt_tokens=5)
    record(store, "acme", days_ago(1), 1)
    record(store, "acme", days_ago(1), 0, status="failure")
    record(store, "acme", today(), 2, cached_tokens=3)
    span = f"start_date={days_ago(2)}&end_date={today()}&end_user_ids=acme"
    first = activity(client, f"{span}&page_size=2").get_json()
    second = activity(client, f"{span}&page_size=2&page=2").get_json()
    assert [day["date"] for day in first["results"]] == [today(), days_ago(1)]
    assert [day["date"] for day in second["results"]] == [days_ago(2)]
    assert first["metadata"]["has_more"] is True and second["metadata"]["has_more"] is False
    assert first["metadata"]["total_pages"] == second["metadata"]["total_pages"] == 2
    assert first["metadata"]["total_spend"] == second["metadata"]["total_spend"]
    assert '"total_spend":100000000.000000000006' in activity(client, span).get_data(as_text=True)
    assert first["results"][1]["metrics"]["failed_requests"] == 1
    assert first["results"][0]["metrics"]["cache_read_input_tokens"] == 3
    assert (
        activity(client, f"start_date={days_ago(1)}&end_date={days_ago(1)}").get_json()["metadata"][
            "total_api_requests"
        ]
        == 2
    )


def test_no_activity_is_an_empty_page(client):
    body = activity(client, "start_date=2020-01-01&end_date=2020-01-31").get_json()
    assert body["results"] == []
    assert (body["metadata"]["total_spend"], body["metadata"]["total_pages"], body["metadata"]["has_more"]) == (
        0,
        0,
        False,
    )


@pytest.mark.parametrize(
    "query",
    [
        "end_date=2026-01-01",
        "start_date=2026-01-01",
        "start_date=2026-1-01&end_date=2026-02-01",
        "start_date=20260101&end_date=2026-02-01",
        "start_date=2026-02-30&end_date=2026-03-01",
        "start_date=2026-03-02&end_date=2026-03-01",
        "start_date=2026-01-01&end_date=2026-02-01&page_size=0",
        "start_date=2026-01-01&end_date=2026-02-01&page_size=1001",
        "start_date=2026-01-01&end_date=2026-02-01&page=x",
        "start_date=2026-01-01&end_date=2026-02-01&end_user_ids=a%00b",
    ],
)
def test_malformed_dates_and_pages_are_400(client, query):
    assert_openai_error(activity(client, query), 400)


def test_activity_needs_the_master_key(client):
    assert_openai_error(client.get(f"/customer/daily/activity?start_date={today()}&end_date={today()}"), 401)
    assert_openai_error(client.post("/global/spend/end_users"), 401)


# -- POST /global/spend/end_users ------------------------------------------------------------------


def top(client, body=None):
    if body is None:
        return client.post("/global/spend/end_users", headers=AUTH)
    return client.post("/global/spend/end_users", json=body, headers=AUTH)


def test_top_customers_of_the_last_30_days_by_exact_spend(client, store):
    record(store, "whale", days_ago(1), HUGE)
    record(store, "whale", today(), 1)
    record(store, "minnow", today(), 2)
    record(store, "minnow", today(), 0, status="failure")
    record(store, "gone", days_ago(31), HUGE * 2)
    record(store, None, today(), HUGE * 3)
    response = top(client)
    assert response.status_code == 200
    assert response.get_json() == [
        {"end_user": "whale", "total_count": 2, "total_spend": 100000000.0},
        {"end_user": "minnow", "total_count": 2, "total_spend": 2e-12},
    ]
    assert '"total_spend":100000000.000000000004' in response.get_data(as_text=True)
    assert top(client, {}).get_json() == response.get_json()


def test_top_customers_over_the_days_asked(client, store):
    record(store, "old", "2026-01-10", 5)
    record(store, "older", "2026-01-01", 7)
    assert top(client, {"startTime": "2026-01-05", "endTime": "2026-01-31T00:00:00Z"}).get_json() == [
        {"end_user": "old", "total_count": 1, "total_spend": 5e-12}
    ]
    assert [row["end_user"] for row in top(client, {"startTime": "2026-01-01T23:59:59", "endTime": "2026-01-10"})
            .get_json()] == ["older", "old"]  # fmt: skip


def test_top_customers_lists_at_most_100(client, store):
    for n in range(105):
        record(store, f"c{n:03d}", today(), n + 1)
    found = top(client).get_json()
    assert len(found) == 100 and found[0]["end_user"] == "c104" and found[-1]["end_user"] == "c005"


@pytest.mark.parametrize(
    "body",
    [{"startTime": "yesterday"}, {"endTime": 5}, {"startTime": "2026-02-01", "endTime": "2026-01-01"}, [1]],
)
def test_top_customers_bad_times_are_400(client, body):
    assert_openai_error(top(client, body), 400)


def test_a_call_shows_in_the_activity_the_moment_it_returns(client, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    assert client.post("/chat/completions", json=chat_body(user="now"), headers=AUTH).status_code == 200
    assert top(client).get_json()[0]["end_user"] == "now"
    started = time.time()
    assert (
        activity(client, f"start_date={today()}&end_date={today()}").get_json()["results"][0]["metrics"]["api_requests"]
        == 1
    )
    assert time.time() - started < 5
