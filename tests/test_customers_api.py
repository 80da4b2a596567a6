"""The customer and budget admin API: LiteLLM's routes and shapes, without LiteLLM's bugs (SPEC §8)."""

from __future__ import annotations

import pytest

from tests.helpers import AUTH, CUSTOMER_KEYS, assert_openai_error

BUDGET_KEYS = [
    "budget_id",
    "max_budget",
    "soft_budget",
    "tpm_limit",
    "rpm_limit",
    "model_max_budget",
    "budget_duration",
    "budget_reset_at",
    "created_at",
]


@pytest.fixture
def post(client):
    def send(path, body=None, *, data=None):
        if data is not None:
            return client.post(path, data=data, headers={**AUTH, "Content-Type": "application/json"})
        return client.post(path, json=body, headers=AUTH)

    return send


@pytest.fixture
def info(client):
    def fetch(user_id):
        return client.get("/customer/info", query_string={"end_user_id": user_id}, headers=AUTH)

    return fetch


def test_new_customer_with_its_own_budget(post, info):
    response = post(
        "/customer/new",
        {
            "user_id": "acme",
            "alias": "Acme Inc",
            "max_budget": 10.5,
            "budget_duration": "30d",
            "rpm_limit": 100,
            "models": ["gpt-test"],
        },
    )
    assert response.status_code == 200
    body = response.get_json()
    assert list(body) == CUSTOMER_KEYS
    assert (body["user_id"], body["alias"], body["spend"], body["models"]) == ("acme", "Acme Inc", 0, ["gpt-test"])
    budget = body["litellm_budget_table"]
    assert list(budget) == BUDGET_KEYS
    assert (budget["max_budget"], budget["budget_duration"], budget["rpm_limit"]) == (10.5, "30d", 100)
    assert budget["budget_reset_at"].endswith("-01T00:00:00Z")
    assert body["budget_id"] == budget["budget_id"]
    assert info("acme").get_json() == body


def test_end_user_paths_are_aliases(client, post):
    assert client.post("/end_user/new", json={"user_id": "via-alias"}, headers=AUTH).status_code == 200
    assert client.get("/end_user/info?end_user_id=via-alias", headers=AUTH).status_code == 200
    assert client.post("/end_user/block", json={"user_ids": ["via-alias"]}, headers=AUTH).status_code == 200
    assert client.get("/end_user/list", headers=AUTH).get_json()[0]["blocked"] is True


def test_duplicate_customer_is_400_with_litellms_message(post):
    post("/customer/new", {"user_id": "twice"})
    error = assert_openai_error(post("/customer/new", {"user_id": "twice"}), 400, "bad_request", "user_id")
    assert error["message"] == "Customer already exists, passed user_id=twice. Please pass a new user_id."


def test_customer_linked_to_a_tier(post, info):
    tier = post("/budget/new", {"budget_id": "gold", "max_budget": 100, "tpm_limit": 1000}).get_json()
    assert tier["budget_id"] == "gold"
    body = post("/customer/new", {"user_id": "goldie", "budget_id": "gold"}).get_json()
    assert body["budget_id"] == "gold"
    assert body["litellm_budget_table"]["max_budget"] == 100


def test_update_changes_only_what_is_sent(post):
    post("/customer/new", {"user_id": "u1", "alias": "first", "models": ["gpt-test"], "allowed_model_region": "eu"})
    body = post("/customer/update", {"user_id": "u1", "alias": "second", "models": None, "blocked": None}).get_json()
    assert (body["alias"], body["models"], body["allowed_model_region"], body["blocked"]) == (
        "second",
        ["gpt-test"],
        "eu",
        False,
    )
    assert post("/customer/update", {"user_id": "u1", "models": []}).get_json()["models"] == []
    assert post("/customer/update", {"user_id": "u1", "blocked": True}).get_json()["blocked"] is True


def test_update_honours_max_budget_zero_and_keeps_budget_duration(post):
    post("/customer/new", {"user_id": "u2"})
    body = post("/customer/update", {"user_id": "u2", "max_budget": 0, "budget_duration": "1d"}).get_json()
    budget = body["litellm_budget_table"]
    assert (budget["max_budget"], budget["budget_duration"]) == (0, "1d")
    assert budget["budget_reset_at"].endswith("T00:00:00Z")


def test_update_of_a_tier_member_forks_a_private_budget(post):
    post("/budget/new", {"budget_id": "shared", "max_budget": 50, "rpm_limit": 10, "budget_duration": "7d"})
    post("/customer/new", {"user_id": "member-a", "budget_id": "shared"})
    post("/customer/new", {"user_id": "member-b", "budget_id": "shared"})

    own = post("/customer/update", {"user_id": "member-a", "max_budget": 5}).get_json()
    assert own["budget_id"] != "shared"
    assert (own["litellm_budget_table"]["max_budget"], own["litellm_budget_table"]["rpm_limit"]) == (5, 10)
    assert own["litellm_budget_table"]["budget_duration"] == "7d"
    [tier] = post("/budget/info", {"budgets": ["shared"]}).get_json()
    assert tier["max_budget"] == 50
    other = post("/customer/update", {"user_id": "member-b", "alias": "b"}).get_json()
    assert other["budget_id"] == "shared"


def test_update_unknown_customer_is_404_on_user_id(post):
    error = assert_openai_error(
        post("/customer/update", {"user_id": "ghost", "alias": "x"}), 404, "not_found", "user_id"
    )
    assert error["message"] == "End User Id=ghost does not exist in db"


def test_delete_is_all_or_nothing_and_keeps_spend_logs(client, post, info, store):
    client.post(
        "/chat/completions",
        json={"model": "mock-model", "user": "spender", "messages": [{"role": "user", "content": "hi"}]},
        headers=AUTH,
    )
    post("/customer/new", {"user_id": "other"})
    error = assert_openai_error(
        post("/customer/delete", {"user_ids": ["spender", "nope"]}), 404, "not_found", "user_ids"
    )
    assert error["message"] == "End User Id(s)=nope do not exist in db"
    assert info("spender").status_code == 200

    response = post("/customer/delete", {"user_ids": ["spender", "other"]})
    assert response.get_json() == {
        "deleted_customers": 2,
        "message": "Successfully deleted customers with ids: ['spender', 'other']",
    }
    assert info("spender").status_code == 404
    assert len(store.ledger.spend_logs("spender")) == 1


def test_list_is_paginated_ordered_and_searchable(client, post):
    for user_id, alias in [("c-3", "Gamma"), ("c-1", "Alpha"), ("c-2", "beta corp"), ("d-9", None)]:
        post("/customer/new", {"user_id": user_id, "alias": alias})
    response = client.get("/customer/list?page=1&page_size=2", headers=AUTH)
    assert [c["user_id"] for c in response.get_json()] == ["c-1", "c-2"]
    assert response.headers["x-total-count"] == "4"
    assert [c["user_id"] for c in client.get("/customer/list?page=2&page_size=2", headers=AUTH).get_json()] == [
        "c-3",
        "d-9",
    ]
    found = client.get("/customer/list?search=BETA", headers=AUTH)
    assert [c["user_id"] for c in found.get_json()] == ["c-2"] and found.headers["x-total-count"] == "1"
    assert [c["user_id"] for c in client.get("/customer/list?search=c-", headers=AUTH).get_json()] == [
        "c-1",
        "c-2",
        "c-3",
    ]
    assert client.get("/customer/list?search=%25", headers=AUTH).get_json() == []


def test_block_creates_unseen_ids_and_answers_200_with_the_records(post, info):
    post("/customer/new", {"user_id": "known"})
    body = post("/customer/block", {"user_ids": ["known", "unseen"]}).get_json()
    assert [(c["user_id"], c["blocked"]) for c in body["blocked_users"]] == [("known", True), ("unseen", True)]
    assert info("unseen").get_json()["blocked"] is True


def test_unblock_clears_the_stored_flag(post, info):
    post("/customer/block", {"user_ids": ["b1"]})
    body = post("/customer/unblock", {"user_ids": ["b1"]}).get_json()
    assert body["blocked_users"][0]["blocked"] is False
    assert info("b1").get_json()["blocked"] is False
    assert_openai_error(post("/customer/unblock", {"user_ids": ["never-seen"]}), 404, "not_found", "user_ids")


def test_budget_crud(client, post):
    created = post(
        "/budget/new",
        {
            "max_budget": 20,
            "soft_budget": 15,
            "budget_duration": "1mo",
            "model_max_budget": {"gpt-test": {"max_budget": 5, "budget_duration": "1d"}},
        },
    )
    budget = created.get_json()
    assert list(budget) == BUDGET_KEYS and len(budget["budget_id"]) == 36
    assert budget["model_max_budget"] == {"gpt-test": {"max_budget": 5, "budget_duration": "1d"}}

    updated = post("/budget/update", {"budget_id": budget["budget_id"], "max_budget": 25, "budget_duration": None})
    assert (
        updated.get_json()["max_budget"],
        updated.get_json()["budget_duration"],
        updated.get_json()["budget_reset_at"],
    ) == (25, None, None)
    assert updated.get_json()["soft_budget"] == 15
    assert [b["budget_id"] for b in client.get("/budget/list", headers=AUTH).get_json()] == [budget["budget_id"]]

    post("/customer/new", {"user_id": "tiered", "budget_id": budget["budget_id"]})
    deleted = post("/budget/delete", {"id": budget["budget_id"]})
    assert deleted.get_json()["budget_id"] == budget["budget_id"]
    assert client.get("/customer/info?end_user_id=tiered", headers=AUTH).get_json()["budget_id"] is None
    assert client.get("/budget/list", headers=AUTH).get_json() == []


def test_duplicate_budget_is_400(post):
    post("/budget/new", {"budget_id": "t"})
    error = assert_openai_error(post("/budget/new", {"budget_id": "t"}), 400, param="budget_id")
    assert error["message"] == "Budget with id 't' already exists."


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/customer/new", {"user_id": "x", "budget_id": "no-such-tier"}, 400, "budget_id"),
        ("/customer/new", {"user_id": "x", "max_budget": -1}, 400, "max_budget"),
        ("/customer/new", {"user_id": "x", "max_budget": "ten"}, 400, "max_budget"),
        ("/customer/new", {"user_id": "x", "max_budget": True}, 400, "max_budget"),
        ("/customer/new", {"user_id": "x", "budget_duration": "fortnight"}, 400, "budget_duration"),
        ("/customer/new", {"user_id": "x", "budget_duration": "0d"}, 400, "budget_duration"),
        ("/customer/new", {"user_id": "x", "max_budget": 5, "budget_id": "gold"}, 400, "budget_id"),
        ("/customer/new", {"user_id": "x", "default_model": "gpt-5"}, 400, "default_model"),
        ("/customer/new", {"user_id": "x", "allowed_model_region": "asia"}, 400, "allowed_model_region"),
        ("/customer/new", {"user_id": "x", "models": "gpt-test"}, 400, "models"),
        ("/customer/new", {"user_id": "x", "rpm_limit": -5}, 400, "rpm_limit"),
        ("/customer/new", {"user_id": "x", "model_max_budget": {"gpt-test": 5}}, 400, "model_max_budget"),
        ("/customer/new", {"alias": "no id"}, 400, "user_id"),
        ("/customer/new", {"user_id": "x" * 300}, 400, "user_id"),
        ("/customer/update", {"user_id": "x", "max_budget": -0.01}, 400, "max_budget"),
        ("/customer/delete", {"user_ids": []}, 400, "user_ids"),
        ("/customer/delete", {}, 400, "user_ids"),
        ("/customer/block", {"user_ids": "x"}, 400, "user_ids"),
        ("/customer/block", {"user_ids": [""]}, 400, "user_ids"),
        ("/budget/new", {"max_budget": -3}, 400, "max_budget"),
        ("/budget/new", {"soft_budget": "lots"}, 400, "soft_budget"),
        ("/budget/new", {"budget_duration": "1y"}, 400, "budget_duration"),
        ("/budget/update", {"max_budget": 1}, 400, "budget_id"),
        ("/budget/update", {"budget_id": "missing", "max_budget": 1}, 404, "budget_id"),
        ("/budget/info", {"budgets": []}, 400, "budgets"),
        ("/budget/delete", {"id": "missing"}, 404, "budget_id"),
    ],
)
def test_bad_admin_input_is_refused_and_writes_nothing(client, post, path, body, status, param, store):
    post("/budget/new", {"budget_id": "gold"})
    before = (
        client.get("/customer/list", headers=AUTH).get_json(),
        client.get("/budget/list", headers=AUTH).get_json(),
    )
    assert_openai_error(post(path, body), status, param=param)
    after = (client.get("/customer/list", headers=AUTH).get_json(), client.get("/budget/list", headers=AUTH).get_json())
    assert after == before


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_money_is_400_and_creates_nothing(client, post, value):
    # NaN and Infinity are not JSON: the body is refused before any field is read.
    data = '{"user_id": "x", "max_budget": ' + value + "}"
    error = assert_openai_error(post("/customer/new", data=data), 400, "invalid_request_error")
    assert f"{value} is not a JSON number" in error["message"]
    assert client.get("/customer/info?end_user_id=x", headers=AUTH).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/customer/new",
        "/customer/update",
        "/customer/delete",
        "/customer/block",
        "/budget/new",
        "/budget/update",
        "/budget/info",
        "/budget/delete",
    ],
)
@pytest.mark.parametrize("data", ["{not json", "[]", ""])
def test_non_json_admin_bodies_are_400(post, path, data):
    assert_openai_error(post(path, data=data), 400, "invalid_request_error")


@pytest.mark.parametrize("query", ["page_size=0", "page_size=1000", "page=0", "page=abc", "page_size=-1"])
def test_bad_pagination_is_400(client, query):
    assert_openai_error(client.get(f"/customer/list?{query}", headers=AUTH), 400)


def test_money_is_exact_in_admin_responses(post):
    body = post("/customer/new", {"user_id": "exact", "max_budget": 0.1, "spend": 0.2}).get_json()
    assert body["litellm_budget_table"]["max_budget"] == 0.1
    assert body["spend"] == 0.2
