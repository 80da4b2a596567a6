"""Three instances (2 workers each) on one PostgreSQL database: scale-out (SPEC §7, §10, §11).

Three Tollgate boxes, each the Procfile's gunicorn with 2 workers and webhooks on, share one
fresh PostgreSQL database, and calls are spread over them as a load balancer would. Spend is
exact on every box the moment calls return, every call's `spend_tracked` event is delivered
(one body per event id, whichever worker of whichever box posts it), and a budget holds however
the calls are spread: at most one call over in standard enforcement, never over in strict.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal

import pytest
import requests

from spend.engines import open_store
from tests.fake_upstream import FakeUpstream
from tests.helpers import AUTH, PRICED, sql_rows, write_config
from tests.servers import Server, server_env, tollgate_servers
from tests.webhook_sink import WebhookSink

INSTANCES = 3
WORKERS = 2
POOL = 4  # DATABASE_POOL_SIZE
CUSTOMERS = [f"scale-{n}" for n in range(6)]
CALLS = 300  # 50 a customer
PER_CALL = Decimal("0.06")  # the fake upstream's 20 + 20 tokens at 0.001 / 0.002
PER_CALL_UNITS = 60_000_000_000


@contextmanager
def three_instances(tmp_path, database_url: str, upstream_url: str, sink_url: str, mode: str) -> Iterator[list[Server]]:
    """INSTANCES boxes of WORKERS workers on `database_url`, started together, webhooks to `sink_url`."""
    models = [
        {
            "model_name": "gpt-test",
            "litellm_params": {"model": "openai/gpt-test", "api_base": upstream_url, "api_key": "none", **PRICED},
        }
    ]
    config = write_config(
        tmp_path,
        models,
        litellm_settings={"budget_enforcement": mode},
        general_settings={"alerting": ["webhook"]},
    )
    # At most 3 x 2 x POOL = 24 connections, well under PostgreSQL's default max_connections (100),
    # which other test runs may be sharing: an operator sizes instances x workers x pool the same way.
    env = server_env(config, database_url, WEBHOOK_URL=sink_url, DATABASE_POOL_SIZE=str(POOL))
    with tollgate_servers([env] * INSTANCES, workers=WORKERS) as servers:
        yield servers


def chat(server: Server, customer: str, **extra) -> requests.Response:
    body = {"model": "gpt-test", "user": customer, "messages": [{"role": "user", "content": "hi"}], **extra}
    return requests.post(f"{server.url}/chat/completions", json=body, headers=AUTH, timeout=60)


def all_at_once(calls: list[tuple[Server, str]], **extra) -> list[requests.Response]:
    """Each (server, customer) call made in its own thread, all released together."""
    barrier = threading.Barrier(len(calls), timeout=30)

    def one(call: tuple[Server, str]) -> requests.Response:
        barrier.wait()
        return chat(*call, **extra)

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(one, calls))


def spend_on(server: Server, customer: str) -> Decimal:
    response = requests.get(f"{server.url}/customer/info", params={"end_user_id": customer}, headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return json.loads(response.text, parse_float=Decimal)["spend"]


def delivered(sink: WebhookSink, store, spend_tracked: int, timeout: float = 30.0) -> dict[str, set[bytes]]:
    """The bodies the sink accepted, by event id, once `spend_tracked` such events arrived and the
    outbox holds nothing pending (so no late redelivery is missed)."""
    deadline = time.monotonic() + timeout
    while True:
        bodies = defaultdict(set)
        for _, body in sink.accepted_with_headers():
            bodies[json.loads(body)["event_id"]].add(body)
        tracked = sum(1 for found in bodies.values() if json.loads(next(iter(found)))["event"] == "spend_tracked")
        if (tracked >= spend_tracked and not store.outbox.list("pending", 1)) or time.monotonic() > deadline:
            return bodies
        time.sleep(0.1)


def events_of(bodies: dict[str, set[bytes]]) -> list[dict]:
    """One event per id: each id was posted with one body only, whoever posted it and how often."""
    assert all(len(found) == 1 for found in bodies.values()), {i: b for i, b in bodies.items() if len(b) > 1}
    return [json.loads(next(iter(found)), parse_float=Decimal) for found in bodies.values()]


def test_three_instances_charge_exactly_and_deliver_every_event(tmp_path, database_url, stores):
    url = database_url("postgres")
    store = open_store(url)
    stores.append(store)
    with FakeUpstream(delay_ms=200) as upstream, WebhookSink() as sink:
        with three_instances(tmp_path, url, upstream.url, sink.url, "standard") as servers:
            # Call n is customer n % 6's, on box (n // 6) % 3: every customer is served by every box.
            calls = [(servers[(n // len(CUSTOMERS)) % INSTANCES], CUSTOMERS[n % len(CUSTOMERS)]) for n in range(CALLS)]
            responses = all_at_once(calls)

            assert Counter(r.status_code for r in responses) == {200: CALLS}, [r.text for r in responses][:3]
            assert {r.headers["x-litellm-response-cost"] for r in responses} == {"0.06"}
            for server in servers:
                assert {customer: spend_on(server, customer) for customer in CUSTOMERS} == dict.fromkeys(
                    CUSTOMERS, 50 * PER_CALL
                ), server.url
            bodies = delivered(sink, store, CALLS)
            boxes_log = "".join(server.log() for server in servers)
        assert upstream.calls == CALLS
    assert boxes_log.count("Booting worker") == INSTANCES * WORKERS

    events = events_of(bodies)
    tracked = [event for event in events if event["event"] == "spend_tracked"]
    assert Counter(event["customer_id"] for event in tracked) == dict.fromkeys(CUSTOMERS, 50)
    assert {event["spend"] for event in tracked} == {PER_CALL}
    assert not store.outbox.list("dead", 10)
    rows = sql_rows(
        store,
        "SELECT customer_id, COUNT(*), units_sum(cost_units) FROM spend_logs WHERE status = 'success' "
        "GROUP BY customer_id",
    )
    assert sorted((customer, count, int(units)) for customer, count, units in rows) == [
        (customer, 50, 50 * PER_CALL_UNITS) for customer in CUSTOMERS
    ]
    for customer in CUSTOMERS:
        assert store.admin.get_customer(customer).spend_units == 50 * PER_CALL_UNITS


@pytest.mark.parametrize("mode", ["standard", "strict"])
def test_a_budget_for_ten_calls_holds_against_sixty_parallel_calls_on_three_instances(
    tmp_path, database_url, stores, mode
):
    url = database_url("postgres")
    store = open_store(url)
    stores.append(store)
    budget = 10 * PER_CALL
    with FakeUpstream(delay_ms=100) as upstream, WebhookSink() as sink:
        with three_instances(tmp_path, url, upstream.url, sink.url, mode) as servers:
            created = requests.post(
                f"{servers[0].url}/customer/new",
                json={"user_id": "ten-calls", "max_budget": float(budget)},
                headers=AUTH,
                timeout=10,
            )
            assert created.status_code == 200, created.text
            responses = all_at_once([(servers[n % INSTANCES], "ten-calls") for n in range(60)], max_tokens=20)

            statuses = Counter(r.status_code for r in responses)
            assert set(statuses) <= {200, 422}, (statuses, [r.text for r in responses if r.status_code != 200][:3])
            assert statuses[200] >= 1, statuses
            charged = sum(Decimal(r.headers["x-litellm-response-cost"]) for r in responses if r.status_code == 200)
            assert [spend_on(server, "ten-calls") for server in servers] == [charged] * INSTANCES
            bodies = delivered(sink, store, statuses[200])

    if mode == "strict":
        assert charged <= budget, (statuses, charged)
    else:
        assert charged <= budget + PER_CALL, (statuses, charged)
    assert store.admin.get_customer("ten-calls").spend_units == int(charged * 10**12)
    events = events_of(bodies)
    tracked = [event for event in events if event["event"] == "spend_tracked"]
    assert len(tracked) == statuses[200]
    assert sum(event["spend"] for event in tracked) == charged
    # Budget events fire once per customer, event, threshold and window, whichever box charged the call.
    fired = Counter(once_key(event) for event in events if event["event"] != "spend_tracked")
    assert set(fired.values()) <= {1}, fired


def once_key(event: dict) -> tuple[str, str | None]:
    """What a budget event of one customer's lifetime budget fires once for: the event, and for
    `threshold_crossed` the threshold ("Customer reached 80% of budget. …")."""
    if event["event"] == "threshold_crossed":
        return event["event"], event["event_message"].split("%")[0]
    return event["event"], None
