"""Hostile numbers, durations, dates, ids and nesting are refused at the edge with a 400 in the
envelope, before anything is written; nothing a client sends can make a later read answer 500."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spend import periods
from tests.helpers import AUTH, assert_openai_error, chat_body

ADMIN_POSTS = [
    "/chat/completions",
    "/customer/new",
    "/customer/update",
    "/customer/delete",
    "/customer/block",
    "/customer/unblock",
    "/budget/new",
    "/budget/update",
    "/budget/info",
    "/budget/delete",
    "/webhooks/requeue",
]


def post_raw(client, path, data: bytes):
    return client.post(path, data=data, headers={**AUTH, "Content-Type": "application/json"})


def assert_calls_work(client, user_id="edge"):
    """The customer can still make a call, and every list still answers."""
    assert (
        client.post("/chat/completions", json=chat_body(model="mock-model", user=user_id), headers=AUTH).status_code
        == 200
    )
    assert client.get("/customer/list", headers=AUTH).status_code == 200
    assert client.get("/budget/list", headers=AUTH).status_code == 200


def nothing_stored(client, store, user_id="edge", budget_id="edge-tier"):
    """The refused write left no row, and every list still answers."""
    assert store.admin.get_customer(user_id) is None
    assert store.admin.get_budget(budget_id) is None
    assert client.get("/customer/list", headers=AUTH).status_code == 200
    assert client.get("/budget/list", headers=AUTH).status_code == 200


@pytest.mark.parametrize("path", ADMIN_POSTS)
def test_deeply_nested_json_is_400_on_every_post_route(client, path):
    data = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    error = assert_openai_error(post_raw(client, path, data), 400, "invalid_request_error")
    assert "nest" in error["message"]


@pytest.mark.parametrize("path", ADMIN_POSTS)
def test_json_nested_within_the_bound_is_read(client, path):
    data = b'{"deep": ' + b"[" * 60 + b"]" * 60 + b"}"
    assert post_raw(client, path, data).status_code != 500


@pytest.mark.parametrize(
    "data",
    [
        b'{"model": "mock-model", "messages": [], "temperature": 1e309}',
        b'{"model": "mock-model", "messages": [], "temperature": -1e309}',
    ],
)
def test_a_number_too_large_for_a_double_is_400(client, data):
    error = assert_openai_error(post_raw(client, "/chat/completions", data), 400, "invalid_request_error")
    assert "1e309" in error["message"]


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/customer/new", b'{"user_id": "\\ud800"}'),
        ("/customer/new", b'{"user_id": "edge", "alias": "\\udfff"}'),
        ("/customer/block", b'{"user_ids": ["\\ud800"]}'),
        ("/budget/new", b'{"budget_id": "\\ud800"}'),
        ("/chat/completions", b'{"model": "mock-model", "messages": [], "user": "\\ud800"}'),
    ],
)
def test_a_lone_surrogate_is_400(client, store, path, data):
    assert_openai_error(post_raw(client, path, data), 400, "invalid_request_error")
    nothing_stored(client, store)


@pytest.mark.parametrize("path", ["/customer/info?end_user_id=%ED%A0%80", "/spend/logs?end_user=%ED%A0%80"])
def test_a_lone_surrogate_in_a_query_is_not_a_500(client, path):
    assert client.get(path, headers=AUTH).status_code in (400, 404, 200)


@pytest.mark.parametrize(
    ("route", "name"),
    [
        ("/customer/list", "page"),
        ("/customer/list", "page_size"),
        ("/spend/logs", "page"),
        ("/webhooks/events", "limit"),
    ],
)
@pytest.mark.parametrize("page", ["²", "١", "٣", "1" * 25, "99999999999999999999", "-1", "0", "1.5", " "])
def test_a_page_that_is_not_a_small_ascii_whole_number_is_400(client, route, name, page):
    response = client.get(route, query_string={name: page}, headers=AUTH)
    assert_openai_error(response, 400, "invalid_request_error", name)


@pytest.mark.parametrize("route", ["/customer/list", "/spend/logs"])
def test_the_largest_page_answers_an_empty_list(client, route):
    response = client.get(route, query_string={"page": "1000000000"}, headers=AUTH)
    assert response.status_code == 200 and response.get_json() == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("end_date", "9999-12-31"),
        ("start_date", "9999-12-31"),
        ("end_date", "0001-01-01"),
        ("start_date", "0001-01-01"),
        ("end_date", "9999-12-31T23:59:59Z"),
        ("start_date", "0001-01-01T00:00:00+01:00"),
        ("end_date", "0001-01-01T00:00:00+01:00"),
        ("end_date", "9999-12-31T23:59:59-01:00"),
    ],
)
def test_a_date_at_the_ends_of_the_calendar_is_a_clear_answer(client, name, value):
    response = client.get("/spend/logs", query_string={name: value}, headers=AUTH)
    if response.status_code == 200:
        assert isinstance(response.get_json(), list)
    else:
        assert_openai_error(response, 400, "invalid_request_error", name)


def test_the_last_whole_day_a_filter_can_name_is_read(client):
    response = client.get(
        "/spend/logs", query_string={"start_date": "0001-01-01", "end_date": "9998-12-31"}, headers=AUTH
    )
    assert response.status_code == 200


@pytest.mark.parametrize("duration", ["99999999999d", "999999999mo", "10000000h", "99999999999999999999s", "1201mo"])
@pytest.mark.parametrize("path", ["/customer/new", "/budget/new"])
def test_a_duration_beyond_a_hundred_years_is_400_and_stores_nothing(client, store, path, duration):
    body = {
        "user_id": "edge",
        "budget_id": "edge-tier",
        "budget_duration": duration,
        "budget_reset_at": "2020-01-01T00:00:00Z",
    }
    if path == "/customer/new":
        body.pop("budget_id")
    error = assert_openai_error(
        client.post(path, json=body, headers=AUTH), 400, "invalid_request_error", "budget_duration"
    )
    assert "100 years" in error["message"]
    nothing_stored(client, store)


@pytest.mark.parametrize("duration", ["1200mo", "36500d", "5200w", "876000h"])
def test_a_duration_of_a_hundred_years_is_accepted_and_readable(client, duration):
    body = {"user_id": "edge", "budget_duration": duration, "budget_reset_at": "2020-01-01T00:00:00Z"}
    assert client.post("/customer/new", json=body, headers=AUTH).status_code == 200
    assert client.get("/customer/info?end_user_id=edge", headers=AUTH).status_code == 200
    assert client.get("/customer/list", headers=AUTH).status_code == 200
    assert_calls_work(client)


@pytest.mark.parametrize(
    "reset_at",
    ["9999-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00", "9998-12-31T23:00:00-05:00"],
)
@pytest.mark.parametrize("path", ["/customer/new", "/budget/new"])
def test_a_reset_time_at_the_ends_of_the_calendar_is_400_and_stores_nothing(client, store, path, reset_at):
    body = {"user_id": "edge", "budget_id": "edge-tier", "budget_duration": "1mo", "budget_reset_at": reset_at}
    if path == "/customer/new":
        body.pop("budget_id")
    assert_openai_error(client.post(path, json=body, headers=AUTH), 400, "invalid_request_error", "budget_reset_at")
    nothing_stored(client, store)


@pytest.mark.parametrize(
    "reset_at",
    ["0001-01-01T00:00:00Z", "9998-12-31T23:59:59Z", "2020-02-29T12:00:00+05:30", "9998-12-31T23:59:59+05:00"],
)
def test_a_reset_time_within_the_calendar_is_accepted_and_readable(client, reset_at):
    body = {"user_id": "edge", "budget_duration": "1mo", "budget_reset_at": reset_at}
    assert client.post("/customer/new", json=body, headers=AUTH).status_code == 200
    assert client.get("/customer/list", headers=AUTH).status_code == 200
    assert_calls_work(client)


LIMITS_PAST_BOUND = [
    ("tpm_limit", 10**30),
    ("rpm_limit", 10**30),
    ("tpm_limit", 2**53 + 1),
    ("max_budget", 10**30),
    ("soft_budget", 1e30),
    ("max_budget", 10**15 + 1),
]


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [("/customer/new", *limit) for limit in [*LIMITS_PAST_BOUND, ("spend", 10**30)]]
    + [("/budget/new", *limit) for limit in LIMITS_PAST_BOUND],
)
def test_a_limit_beyond_its_bound_is_400_and_stores_nothing(client, store, path, field, value):
    body = {"user_id": "edge", "budget_id": "edge-tier", field: value}
    if path == "/customer/new":
        body.pop("budget_id")
    error = assert_openai_error(client.post(path, json=body, headers=AUTH), 400, "invalid_request_error", field)
    assert "at most" in error["message"]
    nothing_stored(client, store)


@pytest.mark.parametrize(("field", "value"), [("tpm_limit", 2**53), ("rpm_limit", 2**53), ("max_budget", 10**15)])
def test_a_limit_at_its_bound_is_accepted_and_readable(client, field, value):
    assert client.post("/customer/new", json={"user_id": "edge", field: value}, headers=AUTH).status_code == 200
    assert client.get("/customer/list", headers=AUTH).status_code == 200
    assert_calls_work(client)


def test_a_model_budget_beyond_its_bound_is_400(client, store):
    body = {
        "budget_id": "edge-tier",
        "model_max_budget": {"gpt-test": {"max_budget": 10**30, "budget_duration": "999999999mo"}},
    }
    assert_openai_error(client.post("/budget/new", json=body, headers=AUTH), 400, "invalid_request_error")
    nothing_stored(client, store)


def test_the_reported_customer_is_refused_and_leaves_every_list_working(client, store):
    """Issue 21, defect 6: this request answered 500, stored the row and broke three routes."""
    body = {
        "user_id": "edge",
        "max_budget": 10,
        "budget_duration": "99999999999d",
        "budget_reset_at": "2020-01-01T00:00:00Z",
    }
    assert_openai_error(
        client.post("/customer/new", json=body, headers=AUTH), 400, "invalid_request_error", "budget_duration"
    )
    nothing_stored(client, store)
    assert_calls_work(client)


def test_an_update_to_an_unreadable_duration_is_400_and_changes_nothing(client, store):
    assert (
        client.post(
            "/customer/new", json={"user_id": "edge", "alias": "before", "budget_duration": "1d"}, headers=AUTH
        ).status_code
        == 200
    )
    body = {"user_id": "edge", "alias": "after", "budget_duration": "99999999999d"}
    assert_openai_error(
        client.post("/customer/update", json=body, headers=AUTH), 400, "invalid_request_error", "budget_duration"
    )
    customer = store.admin.get_customer("edge")
    assert customer.alias == "before" and customer.budget.budget_duration == "1d"


# Property tests: whatever JSON a client sends to an admin field, the answer is 200 or 400, and a
# 400 leaves the store as it was. Values shaped like each field found what the lists above missed
# (`500000w`, `100000mo`: durations just past what the calendar can compute).
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DURATIONS = st.from_regex(r"[0-9]{1,14}(s|m|h|d|w|mo)", fullmatch=True) | st.from_regex(r"\s*[0-9]+\s*(s|m|h|d|w|mo)?")
MOMENTS = st.tuples(
    st.datetimes(), st.sampled_from(["", "Z", "+00:00", "+14:00", "-12:00", "+23:59", "-23:59", "+05:30"])
).map(lambda pair: pair[0].isoformat() + pair[1])
NUMBERS = st.integers() | st.integers(min_value=-(2**200), max_value=2**200) | st.floats()
SCALARS = st.none() | st.booleans() | NUMBERS | st.text() | DURATIONS | MOMENTS
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3), max_leaves=8
)
# Each field gets any JSON value, or one shaped like what it expects, where the edge cases hide.
FIELD_VALUES = {
    "budget_duration": DURATIONS | JSON_VALUES,
    "budget_reset_at": MOMENTS | JSON_VALUES,
    "model_max_budget": st.dictionaries(
        st.text(), st.fixed_dictionaries({"max_budget": NUMBERS}, optional={"budget_duration": DURATIONS})
    )
    | JSON_VALUES,
    **{name: NUMBERS | JSON_VALUES for name in ("max_budget", "soft_budget", "tpm_limit", "rpm_limit", "spend")},
}
# psycopg_pool jitters a new connection's lifetime with the global `random`, from its own thread,
# which Hypothesis can see while it draws an example: not a strategy of ours using `random`.
POOL_USES_RANDOM = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies:hypothesis.errors.HypothesisDeprecationWarning"
)
CUSTOMER_FIELDS = [
    "alias", "blocked", "max_budget", "soft_budget", "budget_duration", "budget_reset_at", "tpm_limit", "rpm_limit",
    "budget_id", "allowed_model_region", "default_model", "models", "spend", "model_max_budget",
]  # fmt: skip
BUDGET_FIELDS = [
    "max_budget",
    "soft_budget",
    "budget_duration",
    "budget_reset_at",
    "tpm_limit",
    "rpm_limit",
    "model_max_budget",
]


def bodies(names: list[str]):
    """One field with any value (most finds come from one field), or any mix of them."""
    values = {name: FIELD_VALUES.get(name, JSON_VALUES) for name in names}
    one = st.sampled_from(names).flatmap(lambda name: values[name].map(lambda value: {name: value}))
    return one | st.fixed_dictionaries({}, optional=values)


CUSTOMER_BODIES = bodies(CUSTOMER_FIELDS)
BUDGET_BODIES = bodies(BUDGET_FIELDS)


def post_json(client, path, body):
    """Post `body` as JSON the way any client may: NaN and Infinity as Python writes them."""
    return post_raw(client, path, json.dumps(body).encode())


def assert_200_or_400(response):
    if response.status_code != 200:
        assert_openai_error(response, 400, "invalid_request_error")


@POOL_USES_RANDOM
@PROPERTY
@given(body=CUSTOMER_BODIES)
def test_any_customer_body_is_200_or_400_and_a_400_stores_nothing(client, store, body):
    user_id = f"prop-{uuid.uuid4()}"
    response = post_json(client, "/customer/new", {"user_id": user_id, **body})
    assert_200_or_400(response)
    if response.status_code == 400:
        assert store.admin.get_customer(user_id) is None
    else:
        assert client.get("/customer/info", query_string={"end_user_id": user_id}, headers=AUTH).status_code == 200
    assert client.get("/customer/list", headers=AUTH).status_code == 200
    assert client.get("/budget/list", headers=AUTH).status_code == 200


@POOL_USES_RANDOM
@PROPERTY
@given(body=CUSTOMER_BODIES)
def test_any_customer_update_is_200_or_400_and_a_400_changes_nothing(client, store, body):
    user_id = f"prop-{uuid.uuid4()}"
    created = {"user_id": user_id, "alias": "before", "max_budget": 5, "budget_duration": "1d"}
    assert post_json(client, "/customer/new", created).status_code == 200
    before = store.admin.get_customer(user_id)
    response = post_json(client, "/customer/update", {**body, "user_id": user_id})
    assert_200_or_400(response)
    if response.status_code == 400:
        assert store.admin.get_customer(user_id) == before
    assert client.get("/customer/info", query_string={"end_user_id": user_id}, headers=AUTH).status_code == 200


@POOL_USES_RANDOM
@PROPERTY
@given(body=BUDGET_BODIES)
def test_any_budget_body_is_200_or_400_and_a_400_stores_nothing(client, store, body):
    budget_id = f"prop-{uuid.uuid4()}"
    response = post_json(client, "/budget/new", {"budget_id": budget_id, **body})
    assert_200_or_400(response)
    if response.status_code == 400:
        assert store.admin.get_budget(budget_id) is None
    assert client.get("/budget/list", headers=AUTH).status_code == 200


@POOL_USES_RANDOM
@PROPERTY
@given(name=st.sampled_from(["page", "page_size", "start_date", "end_date"]), value=st.text() | SCALARS.map(str))
def test_any_query_parameter_of_the_lists_is_200_or_400(client, name, value):
    for route in ("/customer/list", "/spend/logs"):
        if route == "/customer/list" and name.endswith("date"):
            continue
        assert_200_or_400(client.get(route, query_string={name: value}, headers=AUTH))


@settings(max_examples=500, deadline=None, database=None)
@given(
    text=st.from_regex(r"[0-9]{1,14}(s|m|h|d|w|mo)", fullmatch=True) | st.text(max_size=8),
    now=st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 12, 31), timezones=st.just(UTC)),
)
def test_every_accepted_duration_has_a_computable_next_reset(text, now):
    try:
        duration = periods.parse_duration(text)
    except ValueError:
        return
    after = periods.next_reset(duration, now)
    assert now < after <= now + timedelta(days=periods.MAX_DAYS + 31)
    assert periods.window_start(duration, after) <= now


def test_a_spend_log_time_with_an_offset_is_read_in_utc(client):
    assert (
        client.post("/chat/completions", json=chat_body(model="mock-model", user="edge"), headers=AUTH).status_code
        == 200
    )
    [row] = client.get("/spend/logs", query_string={"end_user": "edge"}, headers=AUTH).get_json()
    started = periods.from_iso(row["startTime"])
    half_hour_before = (started - timedelta(minutes=30)).astimezone(timezone(timedelta(hours=2))).isoformat()
    query = {"end_user": "edge", "start_date": half_hour_before}
    assert len(client.get("/spend/logs", query_string=query, headers=AUTH).get_json()) == 1


def test_a_duration_stored_before_the_edge_checked_it_leaves_every_read_working(client, store, caplog):
    """Rows written before durations were checked at the edge: the budget reads as one that never
    resets (logged), and the customer, the lists and the customer's calls keep answering."""
    assert client.post("/customer/new", json={"user_id": "edge", "max_budget": 10}, headers=AUTH).status_code == 200
    budget_id = store.admin.get_customer("edge").budget.budget_id
    store.engine.write(
        lambda tx: tx.execute(
            "UPDATE budgets SET budget_duration = ?, budget_reset_at = ? WHERE budget_id = ?",
            ("99999999999d", "2020-01-01T00:00:00Z", budget_id),
        )
    )
    info = client.get("/customer/info", query_string={"end_user_id": "edge"}, headers=AUTH)
    assert info.status_code == 200
    assert info.get_json()["litellm_budget_table"]["budget_duration"] == "99999999999d"
    assert_calls_work(client)
    assert "unreadable budget_duration='99999999999d'" in caplog.text
