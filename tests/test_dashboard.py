"""The /ui dashboard through Flask's test client: login, CSRF, the customers list (search, pages,
10,000 customers), a customer's page (exact money, chart, recent calls) and its actions, which
go through the same code as the customer API. Runs on the suite's engine."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from app import create_app
from config import load_config
from providers.base import Usage
from spend.money import to_units
from spend.store import CallRecord, Customer
from tests.helpers import AUTH, MASTER_KEY, assert_openai_error, sql_rows, write_config

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC).timestamp()
DAY = 86_400


@pytest.fixture
def clock():
    """The app's clock, which a test may move: `clock[0] += seconds`."""
    return [NOW]


@pytest.fixture
def app(tmp_path, environ, upstream, stores, clock):
    config = load_config(str(write_config(tmp_path)), environ)
    app = create_app(config, http=upstream.transport(), clock=lambda: clock[0])
    stores.append(app.extensions["tollgate"].store)
    return app


def token(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def log_in(client) -> str:
    """Log in with the master key; the session's CSRF token."""
    form = {"csrf_token": token(client.get("/ui/login").text), "master_key": MASTER_KEY}
    response = client.post("/ui/login", data=form)
    assert response.status_code == 302 and response.headers["Location"].endswith("/ui/customers")
    return token(client.get("/ui/customers").text)


def add(store, user_id: str, *, alias=None, spend="0", max_budget=None, soft_budget=None, blocked=False) -> None:
    budget = {}
    if max_budget is not None:
        budget["max_budget_units"] = to_units(Decimal(max_budget))
    if soft_budget is not None:
        budget["soft_budget_units"] = to_units(Decimal(soft_budget))
    customer = Customer(user_id, spend_units=to_units(Decimal(spend)), alias=alias, blocked=blocked)
    store.admin.create_customer(customer, budget or None, NOW)


def record(store, user_id: str, cost: str, at: float, request_id: str) -> None:
    usage = Usage(prompt_tokens=12, completion_tokens=7)
    store.ledger.record_call(
        CallRecord(request_id, user_id, "gpt-test", "gpt-test", "dep-1", usage, to_units(Decimal(cost)), at - 0.2, at)
    )


def error_text(page: str) -> str:
    return html.unescape(re.search(r'class="error"[^>]*>([^<]*)<', page).group(1))


# -- before login ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ui/", "/ui/customers", "/ui/customers?q=secret", "/ui/customer?id=secret-co"])
def test_every_page_redirects_to_the_login_page_before_login(client, store, path):
    add(store, "secret-co", alias="Secret Co")
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/ui/login")
    assert "secret-co" not in response.text and "Secret Co" not in response.text


def test_ui_without_the_slash_leads_to_the_dashboard(client):
    response = client.get("/ui")
    assert response.status_code == 308 and response.headers["Location"].endswith("/ui/")


def test_the_api_key_header_does_not_open_the_dashboard(client):
    response = client.get("/ui/customers", headers=AUTH)
    assert response.status_code == 302 and response.headers["Location"].endswith("/ui/login")


def test_an_action_before_login_changes_nothing(client, store):
    add(store, "acme")
    pre_login_token = token(client.get("/ui/login").text)
    response = client.post("/ui/customer/block", data={"csrf_token": pre_login_token, "user_id": "acme"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/ui/login")
    assert store.admin.get_customer("acme").blocked is False


def test_a_wrong_key_gets_a_clear_message_and_no_session(client):
    form = {"csrf_token": token(client.get("/ui/login").text), "master_key": MASTER_KEY + "x"}
    response = client.post("/ui/login", data=form)
    assert response.status_code == 401
    assert error_text(response.text) == "Wrong master key."
    assert client.get("/ui/customers").status_code == 302


def test_the_login_page_is_not_shown_again_once_logged_in(client):
    log_in(client)
    response = client.get("/ui/login")
    assert response.status_code == 302 and response.headers["Location"].endswith("/ui/customers")


@pytest.mark.parametrize(
    ("base_url", "secure"), [("http://localhost", False), ("https://localhost", True)], ids=["http", "https"]
)
def test_the_session_cookie_is_httponly_strict_and_secure_over_https(app, base_url, secure):
    client = app.test_client()
    login_page = client.get("/ui/login", base_url=base_url)
    response = client.post(
        "/ui/login", base_url=base_url, data={"csrf_token": token(login_page.text), "master_key": MASTER_KEY}
    )
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("tollgate_ui=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    assert ("Secure" in cookie) is secure
    assert MASTER_KEY not in cookie


def test_logout_ends_the_session(client):
    csrf = log_in(client)
    response = client.post("/ui/logout", data={"csrf_token": csrf})
    assert response.status_code == 302 and response.headers["Location"].endswith("/ui/login")
    assert client.get("/ui/customers").status_code == 302


def test_a_cookie_copied_before_logout_opens_nothing_after_it(app, client):
    csrf = log_in(client)
    cookie = client.get_cookie("tollgate_ui", path="/ui")
    other = app.test_client()  # another browser holding a copy of the cookie
    other.set_cookie(cookie.key, cookie.value, path="/ui")
    assert other.get("/ui/customers").status_code == 200
    client.post("/ui/logout", data={"csrf_token": csrf})
    assert other.get("/ui/customers").status_code == 302


def test_the_session_lives_on_the_server_and_not_in_the_cookie(client, store):
    log_in(client)
    cookie = client.get_cookie("tollgate_ui", path="/ui").value
    [(count,)] = sql_rows(store, "SELECT COUNT(*) FROM dashboard_sessions")
    assert count == 1
    [(token_hash,)] = sql_rows(store, "SELECT token_hash FROM dashboard_sessions")
    assert token_hash not in cookie  # only the digest of the browser's token is stored


def test_a_session_ends_eight_hours_after_login(client, clock):
    log_in(client)
    clock[0] += 8 * 3600 - 1
    assert client.get("/ui/customers").status_code == 200
    clock[0] += 1
    assert client.get("/ui/customers").status_code == 302


def test_pages_are_never_cached_or_framed(client):
    log_in(client)
    headers = client.get("/ui/customers").headers
    assert headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "script-src" not in headers["Content-Security-Policy"]  # default-src 'none': no script at all


# -- CSRF ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sent", [None, "", "not-the-token"], ids=["missing", "empty", "wrong"])
@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/ui/customer/block", {"user_id": "acme"}),
        ("/ui/customer/budget", {"user_id": "acme", "max_budget": "5"}),
        ("/ui/logout", {}),
    ],
    ids=["block", "budget", "logout"],
)
def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(client, store, sent, path, form):
    add(store, "acme", max_budget="10")
    log_in(client)
    data = dict(form) if sent is None else {**form, "csrf_token": sent}
    assert_openai_error(client.post(path, data=data), 403, "csrf_error", "csrf_token")
    customer = store.admin.get_customer("acme")
    assert customer.blocked is False
    assert customer.budget.max_budget_units == to_units(Decimal("10"))
    assert client.get("/ui/customers").status_code == 200  # still logged in


def test_the_login_form_needs_its_csrf_token_too(client):
    client.get("/ui/login")
    assert_openai_error(client.post("/ui/login", data={"master_key": MASTER_KEY}), 403, "csrf_error")
    assert client.get("/ui/customers").status_code == 302


# -- actions ---------------------------------------------------------------------------------


def test_block_and_unblock_from_the_dashboard_reach_the_store_and_the_api(client, store):
    add(store, "acme")
    csrf = log_in(client)
    response = client.post("/ui/customer/block", data={"csrf_token": csrf, "user_id": "acme"})
    assert response.status_code == 302 and "/ui/customer?id=acme" in response.headers["Location"]
    assert store.admin.get_customer("acme").blocked is True
    assert client.get("/customer/info?end_user_id=acme", headers=AUTH).get_json()["blocked"] is True
    page = client.get("/ui/customer?id=acme").text
    assert "Blocked: its calls are refused." in page and ">Unblock</button>" in page
    client.post("/ui/customer/unblock", data={"csrf_token": csrf, "user_id": "acme"})
    assert store.admin.get_customer("acme").blocked is False


def test_unblocking_an_unknown_customer_is_the_apis_404(client):
    csrf = log_in(client)
    response = client.post("/ui/customer/unblock", data={"csrf_token": csrf, "user_id": "nobody"})
    assert_openai_error(response, 404, "not_found", "user_ids")


def test_the_budget_form_saves_through_customer_update(client, store):
    add(store, "acme")
    csrf = log_in(client)
    form = {"csrf_token": csrf, "user_id": "acme", "max_budget": "12.345678901234", "budget_duration": "30d"}
    assert client.post("/ui/customer/budget", data=form).status_code == 302
    budget = store.admin.get_customer("acme").budget
    assert budget.max_budget_units == 12_345_678_901_234
    assert budget.budget_duration == "30d"
    assert budget.owner_user_id == "acme"
    shown = client.get("/customer/info?end_user_id=acme", headers=AUTH).get_json()["litellm_budget_table"]
    assert shown["max_budget"] == 12.345678901234 and shown["budget_duration"] == "30d"
    assert 'placeholder="12.345678901234"' in client.get("/ui/customer?id=acme").text


@pytest.mark.parametrize(
    ("form", "body"),
    [
        ({"max_budget": "-1"}, {"max_budget": -1}),
        ({"max_budget": "lots"}, {"max_budget": "lots"}),
        ({"max_budget": "1e999"}, None),
        ({"budget_duration": "fortnight"}, {"budget_duration": "fortnight"}),
    ],
    ids=["negative", "text", "infinite", "duration"],
)
def test_a_bad_budget_value_gets_the_apis_message_and_changes_nothing(client, store, form, body):
    add(store, "acme", max_budget="10")
    expected = "max_budget must be a non-negative finite number. Received: inf"
    if body is not None:
        api = client.post("/customer/update", headers=AUTH, json={"user_id": "acme", **body})
        expected = assert_openai_error(api, 400, "invalid_request_error")["message"]
    csrf = log_in(client)
    response = client.post("/ui/customer/budget", data={"csrf_token": csrf, "user_id": "acme", **form})
    assert response.status_code == 400
    assert error_text(response.text) == expected
    assert store.admin.get_customer("acme").budget.max_budget_units == to_units(Decimal("10"))
    assert store.admin.get_customer("acme").budget.budget_duration is None


def test_an_empty_budget_form_says_there_is_nothing_to_change(client, store):
    add(store, "acme")
    csrf = log_in(client)
    response = client.post("/ui/customer/budget", data={"csrf_token": csrf, "user_id": "acme", "max_budget": " "})
    assert response.status_code == 400 and "Nothing to change" in error_text(response.text)
    assert store.admin.get_customer("acme").budget is None


# -- the list --------------------------------------------------------------------------------


def ids_on(html: str) -> list[str]:
    return re.findall(r'<a href="/ui/customer\?id=[^"]+">([^<]+)</a>', html)


def test_the_list_pages_by_fifty_in_id_order(client, store):
    for n in range(120):
        add(store, f"cust-{n:03d}")
    log_in(client)
    first = client.get("/ui/customers").text
    assert ids_on(first) == [f"cust-{n:03d}" for n in range(50)]
    assert "Showing 1–50 of 120 customers" in first and "Page 1 of 3" in first
    last = client.get("/ui/customers?page=3").text
    assert ids_on(last) == [f"cust-{n:03d}" for n in range(100, 120)]
    assert 'rel="prev" href="/ui/customers?page=2"' in last and 'rel="next"' not in last


def test_search_matches_id_or_alias_substrings_case_blind(client, store):
    add(store, "acme-1", alias="Acme Corp")
    add(store, "globex", alias="Globex ACME reseller")
    add(store, "initech", alias="Initech")
    add(store, "100%_real")
    log_in(client)
    assert ids_on(client.get("/ui/customers?q=acme").text) == ["acme-1", "globex"]
    assert ids_on(client.get("/ui/customers?q=CORP").text) == ["acme-1"]
    assert ids_on(client.get("/ui/customers?q=%25_").text) == ["100%_real"]  # LIKE wildcards are literal
    nothing = client.get("/ui/customers?q=umbrella").text
    assert ids_on(nothing) == [] and "No customers match “umbrella”." in nothing


def test_a_bad_page_number_is_a_400(client):
    log_in(client)
    assert_openai_error(client.get("/ui/customers?page=0"), 400, "invalid_request_error", "page")


def test_the_list_shows_spend_budget_bar_and_status(client, store):
    add(store, "a-fine", spend="1", max_budget="10")
    add(store, "b-near", spend="8", max_budget="10")
    add(store, "c-soft", spend="3", max_budget="10", soft_budget="2.5")
    add(store, "d-over", spend="10.000000000001", max_budget="10")
    add(store, "e-blocked", blocked=True)
    log_in(client)
    rows = re.findall(r"<tr>(.*?)</tr>", client.get("/ui/customers").text, re.S)[1:]
    statuses = [re.findall(r'class="status [^"]+">([^<]+)<', row) for row in rows]
    assert statuses == [["active"], ["near budget"], ["near budget"], ["over budget"], ["blocked"]]
    assert 'value="10"' in rows[0] and "10% of 10" in rows[0]
    assert 'value="100"' in rows[3] and ">10.000000000001<" in rows[3]
    assert "no max budget" in rows[4]


def test_ten_thousand_customers_list_and_search(client, store):
    store.engine.write(
        lambda tx: tx.execute(
            "INSERT INTO customers (user_id, alias, created_at, updated_at) "
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) "
            "SELECT 'bulk-' || CAST(100000 + i AS TEXT), 'Alias ' || CAST(i AS TEXT), ?, ? FROM n",
            ("2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:00.000000Z"),
        )
    )
    log_in(client)
    first = client.get("/ui/customers").text
    assert "of 10,000 customers" in first and "Page 1 of 200" in first and len(ids_on(first)) == 50
    last = client.get("/ui/customers?page=200").text
    assert ids_on(last)[-1] == "bulk-110000"
    assert ids_on(client.get("/ui/customers?q=alias 777").text)[:2] == ["bulk-100777", "bulk-107770"]


# -- a customer's page -----------------------------------------------------------------------


def test_money_is_shown_exactly(client, store):
    add(store, "whale", spend="1234567.000000000001", max_budget="2000000.5")
    record(store, "whale", "0.0000105", NOW - 60, "call-1")
    log_in(client)
    page = client.get("/ui/customer?id=whale").text
    assert 'id="spend">1234567.000010500001<' in page  # the seed plus the call, to the pico-dollar
    assert ">2000000.5<" in page
    assert '<td class="money">0.0000105</td>' in page
    listed = client.get("/ui/customers").text
    assert ">1234567.000010500001<" in listed and "% of 2000000.5" in listed
    for shown in (page, listed):
        cells = re.findall(r'class="money"[^>]*>([^<]*)<', shown)
        assert cells and all(re.fullmatch(r"[0-9]+(\.[0-9]+)?|none|Spend \(USD\)|Cost \(USD\)", c) for c in cells)


def test_the_chart_has_a_bar_per_day_with_its_exact_spend(client, store):
    add(store, "acme")
    record(store, "acme", "0.5", NOW - 2 * DAY, "call-a")
    record(store, "acme", "0.25", NOW - 2 * DAY + 60, "call-b")
    record(store, "acme", "1.000000000001", NOW - 60, "call-c")
    record(store, "acme", "9", NOW - 40 * DAY, "call-old")  # before the chart's 30 days
    log_in(client)
    page = client.get("/ui/customer?id=acme").text
    titles = re.findall(r"<title>([^<]+)</title>", page.split("<svg", 1)[1])
    assert len(titles) == 30
    assert titles[-1] == "2026-12-05: $1.000000000001"
    assert titles[-3] == "2026-12-03: $0.75"
    assert titles[0] == "2026-11-06: $0"
    assert "total $1.750000000001" in page


def test_the_page_lists_recent_calls_newest_first(client, store):
    add(store, "acme")
    for n in range(25):
        record(store, "acme", "0.001", NOW - 3600 + n, f"call-{n:02d}")
    log_in(client)
    page = client.get("/ui/customer?id=acme").text
    shown = re.findall(r'<td class="id">([^<]+)</td>', page)
    assert shown == [f"call-{n:02d}" for n in range(24, 4, -1)]


def test_an_unknown_customer_is_a_404(client):
    log_in(client)
    assert_openai_error(client.get("/ui/customer?id=nobody"), 404, "not_found", "id")


def test_text_is_escaped(client, store):
    add(store, "<script>alert(1)</script>", alias='"><img src=x>')
    log_in(client)
    listed = client.get("/ui/customers").text
    assert "<script>alert(1)</script>" not in listed and "&lt;script&gt;" in listed
    assert '"><img src=x>' not in listed


def test_the_stylesheet_is_served_without_login(client):
    response = client.get("/ui/static/ui.css")
    assert response.status_code == 200 and response.mimetype == "text/css"
    response.close()
