"""The /ui dashboard in a real headless browser (Debian's chromium through Playwright) against a
real gunicorn server: log in, search a customer, open its page, block it, and see the customer
API report it blocked. Screenshots go to `TOLLGATE_TEST_ARTEFACTS` (default: the test's tmp dir).

No browser is downloaded: Playwright drives the system's `/usr/bin/chromium` (`scripts/test`
installs it); without it this test fails saying so.
"""

from __future__ import annotations

import os
import time
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from playwright.sync_api import sync_playwright

from providers.base import Usage
from spend.engines import open_store
from spend.money import to_units
from spend.store import CallRecord
from tests.helpers import AUTH, MASTER_KEY, write_config
from tests.servers import server_env, tollgate_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MODELS = [
    {
        "model_name": "mock-model",
        "litellm_params": {
            "model": "mock/mock-model",
            "input_cost_per_token": 0.000003,
            "output_cost_per_token": 0.000015,
        },
    }
]
DAY = 86_400


@pytest.fixture
def artefacts(tmp_path) -> Path:
    folder = Path(os.environ.get("TOLLGATE_TEST_ARTEFACTS") or tmp_path / "artefacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`; scripts/test does)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def server(tmp_path, database_url):
    url = database_url()
    with tollgate_server(server_env(write_config(tmp_path, MODELS), url)) as running:
        seed(running.url, url)
        yield running


def seed(base: str, database_url: str) -> None:
    """Customers made through the API, calls through the proxy, and a month of earlier calls written
    to the same database by the ledger (the server reads them as its own)."""
    customers = [
        {"user_id": "acme-corp", "alias": "Acme Corporation", "max_budget": 25, "budget_duration": "30d"},
        {"user_id": "globex", "alias": "Globex", "max_budget": 0.05, "soft_budget": 0.04, "spend": 0.042},
        {"user_id": "hooli", "alias": "Hooli XYZ", "max_budget": 1, "spend": 1.25},
        {"user_id": "initech", "alias": "Initech"},
        {"user_id": "umbrella", "alias": "Umbrella Health", "max_budget": 100, "blocked": True},
    ]
    for body in customers:
        requests.post(f"{base}/customer/new", headers=AUTH, json=body, timeout=10).raise_for_status()
    for user in ("acme-corp", "acme-corp", "globex", "initech"):
        chat = {"model": "mock-model", "user": user, "messages": [{"role": "user", "content": "hello there"}]}
        requests.post(f"{base}/chat/completions", headers=AUTH, json=chat, timeout=10).raise_for_status()
    store = open_store(database_url)
    try:
        now = time.time()
        for day in range(1, 30):
            cost = to_units(Decimal("0.35")) + to_units(Decimal("0.0173")) * ((day * 7) % 23)
            usage = Usage(prompt_tokens=900 + day, completion_tokens=300 + day)
            at = now - day * DAY
            record = CallRecord(f"seed-{day}", "acme-corp", "mock-model", "mock-model", "seed", usage, cost, at - 1, at)
            store.ledger.record_call(record)
    finally:
        store.engine.close()


def test_log_in_search_open_and_block_a_customer(browser, server, artefacts):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.set_default_timeout(15_000)

    page.goto(f"{server.url}/ui/")
    assert page.url.endswith("/ui/login")
    page.fill("#master_key", "not-the-key")
    page.click("button[type=submit]")
    assert page.inner_text(".error") == "Wrong master key."
    problems.clear()  # the browser reports the refused login's 401 as a console error
    page.fill("#master_key", MASTER_KEY)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/customers")
    assert "Showing 1–5 of 5 customers" in page.inner_text(".count")
    statuses = page.locator("table.customers tbody tr td:last-child").all_inner_texts()
    assert statuses == ["active", "near budget", "over budget", "active", "blocked"]
    page.screenshot(path=str(artefacts / "dashboard-customers.png"), full_page=True)

    page.fill("#q", "acme")
    page.click("form.search button[type=submit]")
    page.wait_for_url("**/ui/customers?q=acme")
    assert page.locator("table.customers tbody tr").count() == 1
    page.click("text=acme-corp")
    page.wait_for_url("**/ui/customer?id=acme-corp")
    assert page.locator("svg.chart rect.bar").count() == 30
    assert page.locator("table.calls tbody tr").count() == 20
    assert page.evaluate("getComputedStyle(document.querySelector('header.top')).display") == "flex"  # CSS loaded
    page.screenshot(path=str(artefacts / "dashboard-customer.png"), full_page=True)
    page.screenshot(
        path=str(artefacts / "dashboard.png"), full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": 1040}
    )

    page.click("button.danger")
    page.wait_for_selector("text=Blocked: its calls are refused.")
    assert page.locator(".statuses .status.blocked").count() == 1
    page.screenshot(path=str(artefacts / "dashboard-blocked.png"), full_page=True)

    info = requests.get(f"{server.url}/customer/info", params={"end_user_id": "acme-corp"}, headers=AUTH, timeout=10)
    assert info.json()["blocked"] is True
    refused = requests.post(
        f"{server.url}/chat/completions",
        headers=AUTH,
        json={"model": "mock-model", "user": "acme-corp", "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert refused.status_code == 400 and "User blocked" in refused.json()["error"]["message"]

    page.click("header .logout button")
    page.wait_for_url("**/ui/login")
    page.goto(f"{server.url}/ui/customers")
    assert page.url.endswith("/ui/login")
    assert problems == []
    page.close()
