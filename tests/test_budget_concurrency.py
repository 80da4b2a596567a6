"""Budgets that concurrency cannot break: 4 real gunicorn workers, one database, a local upstream."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.helpers import AUTH, PRICED, write_config
from tests.servers import server_env, tollgate_server

PER_CALL = Decimal("0.06")  # the fake upstream's 20 + 20 tokens at 0.001 / 0.002


@pytest.fixture(scope="module", params=["standard", "strict"])
def server(request, tmp_path_factory, module_database_url):
    directory = tmp_path_factory.mktemp(request.param)
    with FakeUpstream(delay_ms=100) as upstream:
        models = [
            {
                "model_name": "gpt-test",
                "litellm_params": {"model": "openai/gpt-test", "api_base": upstream.url, "api_key": "none", **PRICED},
            }
        ]
        config = write_config(
            directory,
            models,
            litellm_settings={"budget_enforcement": request.param, "max_end_user_budget_id": "one-call-tier"},
        )
        with tollgate_server(server_env(config, module_database_url()), workers=4) as running:
            running.mode = request.param
            yield running


def admin(server, path, body):
    response = requests.post(f"{server.url}{path}", json=body, headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def spend_of(server, user_id) -> Decimal:
    body = requests.get(f"{server.url}/customer/info", params={"end_user_id": user_id}, headers=AUTH, timeout=10).json()
    return Decimal(repr(body["spend"]))


def burst(server, user_id, calls, **extra) -> tuple[Counter, Decimal]:
    """`calls` chat calls for `user_id`, all released at once: their statuses and summed charged cost."""
    barrier = threading.Barrier(calls, timeout=30)
    body = {"model": "gpt-test", "user": user_id, "messages": [{"role": "user", "content": "hi"}], **extra}

    def one(_):
        barrier.wait()
        return requests.post(f"{server.url}/chat/completions", json=body, headers=AUTH, timeout=60)

    with ThreadPoolExecutor(max_workers=calls) as pool:
        responses = list(pool.map(one, range(calls)))
    charged = sum(Decimal(r.headers["x-litellm-response-cost"]) for r in responses if r.status_code == 200)
    return Counter(r.status_code for r in responses), charged


def test_budget_for_ten_calls_survives_forty_parallel_calls(server):
    admin(server, "/customer/new", {"user_id": "ten-calls", "max_budget": float(10 * PER_CALL)})
    statuses, charged = burst(server, "ten-calls", 40, max_tokens=20)

    assert set(statuses) <= {200, 422}, statuses
    assert 1 <= statuses[200] <= 11, statuses
    spend = spend_of(server, "ten-calls")
    assert spend == charged
    if server.mode == "strict":
        assert spend <= 10 * PER_CALL
    else:
        assert spend <= 11 * PER_CALL


def test_new_customers_cannot_bypass_the_default_tier(server):
    admin(server, "/budget/new", {"budget_id": "one-call-tier", "max_budget": float(PER_CALL)})
    statuses, charged = burst(server, "brand-new", 20, max_tokens=20)

    assert set(statuses) <= {200, 422}, statuses
    assert 1 <= statuses[200] <= 2, statuses
    assert spend_of(server, "brand-new") == charged <= 2 * PER_CALL


def test_rpm_limit_holds_across_workers(server):
    admin(server, "/customer/new", {"user_id": f"rpm-{server.mode}", "rpm_limit": 5})
    body = {"model": "gpt-test", "user": f"rpm-{server.mode}", "messages": [{"role": "user", "content": "hi"}]}
    responses = [
        requests.post(f"{server.url}/chat/completions", json=body, headers={**AUTH, "Connection": "close"}, timeout=10)
        for _ in range(6)
    ]
    assert [r.status_code for r in responses] == [200] * 5 + [429]
    assert 1 <= int(responses[-1].headers["retry-after"]) <= 60
    assert responses[-1].json()["error"]["type"] == "rate_limit_error"
