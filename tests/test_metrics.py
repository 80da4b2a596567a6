"""`/metrics`: LiteLLM's Prometheus names and labels, behind the master key, right across real
gunicorn workers (a killed worker's counts included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from spend.store import OutboxDepth
from tests.helpers import AUTH, UPSTREAM, assert_openai_error, chat_body, openai_reply, write_config
from tests.servers import server_env, tollgate_server
from tests.test_outbox import write_events
from tests.webhook_sink import WebhookSink

IDENTITY = {"end_user", "hashed_api_key", "api_key_alias", "team", "team_alias", "user"}
# LiteLLM's label sets (litellm/types/integrations/prometheus.py), which its dashboards query.
LITELLM_LABELS = {
    "litellm_requests_metric_total": IDENTITY | {"model"},
    "litellm_spend_metric_total": IDENTITY | {"model"},
    "litellm_input_tokens_metric_total": IDENTITY | {"model", "requested_model"},
    "litellm_output_tokens_metric_total": IDENTITY | {"model", "requested_model"},
    "litellm_total_tokens_metric_total": IDENTITY | {"model", "requested_model"},
    "litellm_proxy_total_requests_metric_total": IDENTITY | {"requested_model", "status_code"},
    "litellm_proxy_failed_requests_metric_total": IDENTITY | {"requested_model", "exception_status", "exception_class"},
    "litellm_request_total_latency_metric_count": IDENTITY | {"model", "requested_model"},
    "litellm_llm_api_latency_metric_count": IDENTITY | {"model", "requested_model"},
}
Samples = dict[tuple[str, frozenset], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client) -> Samples:
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/plain")
    return parse(response.get_data(as_text=True))


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` that carry `labels`."""
    wanted = set(labels.items())
    return sum(v for (sample, carried), v in samples.items() if sample == name and wanted <= carried)


def label_names(samples: Samples, name: str) -> set[str]:
    return {label for (sample, carried), _ in samples.items() if sample == name for label, _ in carried}


def chat(client, user="cust-1", model="gpt-test"):
    return client.post("/chat/completions", json=chat_body(user=user, model=model), headers=AUTH)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-wrong"}, {"x-api-key": "sk-wrong"}])
def test_metrics_need_the_master_key(client, headers):
    assert_openai_error(client.get("/metrics", headers=headers), 401, "auth_error")


def test_a_served_call_is_counted_under_litellm_names_and_label_sets(client, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply(prompt_tokens=20, completion_tokens=20))
    assert chat(client).status_code == 200
    samples = scrape(client)

    for name, labels in LITELLM_LABELS.items():
        if name != "litellm_proxy_failed_requests_metric_total":
            assert label_names(samples, name) == labels, name
    served = {"model": "gpt-test", "requested_model": "gpt-test"}
    assert value(samples, "litellm_requests_metric_total", model="gpt-test") == 1
    assert value(samples, "litellm_proxy_total_requests_metric_total", requested_model="gpt-test",
                 status_code="200") == 1  # fmt: skip
    assert value(samples, "litellm_spend_metric_total", model="gpt-test") == pytest.approx(0.06)
    assert value(samples, "litellm_input_tokens_metric_total", **served) == 20
    assert value(samples, "litellm_output_tokens_metric_total", **served) == 20
    assert value(samples, "litellm_total_tokens_metric_total", **served) == 40
    assert value(samples, "litellm_request_total_latency_metric_count", **served) == 1
    assert value(samples, "litellm_llm_api_latency_metric_count", **served) == 1
    assert value(samples, "litellm_proxy_failed_requests_metric_total") == 0
    # No customer, key or team in any label unless the operator opts in.
    assert {v for (_, carried), _ in samples.items() for k, v in carried if k in IDENTITY} == {""}


def test_end_user_label_holds_the_customer_only_when_enabled(make_app, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    client = make_app(litellm_settings={"enable_end_user_cost_tracking_prometheus_only": True}).test_client()
    assert chat(client, user="acme").status_code == 200
    samples = scrape(client)
    for name in ("litellm_spend_metric_total", "litellm_requests_metric_total", "litellm_total_tokens_metric_total"):
        assert value(samples, name, end_user="acme") > 0, name
        assert value(samples, name, end_user="") == 0, name


def test_refusals_are_counted_by_reason_as_failed_requests(client, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply(prompt_tokens=20, completion_tokens=20))
    assert client.post("/customer/new", json={"user_id": "capped", "max_budget": 0.05}, headers=AUTH).status_code == 200
    assert client.post("/customer/block", json={"user_ids": ["bad"]}, headers=AUTH).status_code == 200
    assert chat(client, user="capped").status_code == 200
    assert chat(client, user="capped").status_code == 422
    assert chat(client, user="bad").status_code == 400
    samples = scrape(client)

    assert (
        label_names(samples, "litellm_proxy_failed_requests_metric_total")
        == (LITELLM_LABELS["litellm_proxy_failed_requests_metric_total"])
    )
    assert value(samples, "tollgate_refusals_total", reason="budget") == 1
    assert value(samples, "tollgate_refusals_total", reason="blocked") == 1
    assert value(samples, "litellm_proxy_failed_requests_metric_total", exception_status="422",
                 exception_class="budget_exceeded") == 1  # fmt: skip
    assert value(samples, "litellm_proxy_failed_requests_metric_total", exception_status="400") == 1
    assert value(samples, "litellm_proxy_total_requests_metric_total") == 3
    assert value(samples, "litellm_requests_metric_total") == 1  # refusals never reached a model


def test_a_failed_upstream_call_is_counted_and_charges_nothing(client, upstream):
    upstream.post(f"{UPSTREAM}/chat/completions", status=500, json={"error": {"message": "down"}})
    assert chat(client).status_code == 502
    samples = scrape(client)
    assert value(samples, "litellm_proxy_failed_requests_metric_total", requested_model="gpt-test",
                 exception_status="502", exception_class="UpstreamHTTPError") == 1  # fmt: skip
    assert value(samples, "litellm_proxy_total_requests_metric_total", status_code="502") == 1
    assert value(samples, "litellm_requests_metric_total", model="gpt-test") == 1
    assert value(samples, "litellm_spend_metric_total") == 0


def wait_for(client, check, timeout: float = 20.0) -> Samples:
    """Scrape every 0.2 s until `check(samples)` holds; the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(client)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def test_outbox_depth_and_webhook_failures_are_reported(make_app, environ):
    with WebhookSink() as sink:
        sink.stop()  # the receiver is down: the event waits, every post fails
        environ.update({"WEBHOOK_URL": sink.url, "WEBHOOK_RETRY_MAX_SECONDS": "0.2"})
        app = make_app(general_settings={"alerting": ["webhook"]})
        client = app.test_client()
        try:
            assert chat(client, model="mock-model").status_code == 200
            samples = wait_for(client, lambda s: value(s, "tollgate_webhook_delivery_failures_total") >= 2)
            assert value(samples, "tollgate_webhook_delivery_failures_total") >= 2
            assert value(samples, "tollgate_outbox_pending_events") == 1
            assert value(samples, "tollgate_outbox_oldest_pending_age_seconds") > 0

            sink.start()
            samples = wait_for(client, lambda s: value(s, "tollgate_outbox_pending_events") == 0)
            assert value(samples, "tollgate_outbox_pending_events") == 0
            assert value(samples, "tollgate_outbox_oldest_pending_age_seconds") == 0
            assert len(sink.accepted) == 1
        finally:
            app.extensions["tollgate"].dispatcher.stop()


def test_outbox_pending_depth_counts_only_pending_events_and_dates_the_oldest(contract_store):
    assert contract_store.outbox.pending_depth() == OutboxDepth(pending=0, oldest_created_at=None)
    first = write_events(contract_store, 2, now=1_000.0)
    write_events(contract_store, 3, now=1_500.0)
    assert contract_store.outbox.pending_depth() == OutboxDepth(pending=5, oldest_created_at=1_000.0)
    contract_store.outbox.claim(2_000.0, 45.0, 1)  # leased, still pending
    contract_store.outbox.delivered(first, 2_000.0)
    assert contract_store.outbox.pending_depth() == OutboxDepth(pending=3, oldest_created_at=1_500.0)


# --- real gunicorn workers -------------------------------------------------------------------

PRICED_MOCK = [
    {
        "model_name": "m",
        "litellm_params": {"model": "mock/m", "input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002},
    }
]


def workers_of(master: int) -> set[int]:
    """The live child processes of `master`, from /proc."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master and fields[0] != "Z":
            children.add(int(entry.name))
    return children


def server_scrape(url: str) -> Samples:
    response = requests.get(f"{url}/metrics", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return parse(response.text)


def leave_stale_counts(directory: Path) -> None:
    """A counter file as an earlier run would have left it: 1,000 requests that are not this run's."""
    code = (
        "from prometheus_client import Counter\n"
        "Counter('litellm_proxy_total_requests_metric', 'stale', ['status_code']).labels('200').inc(1000)\n"
    )
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
                   check=True, timeout=60)  # fmt: skip
    assert list(directory.glob("counter_*.db"))


def test_metrics_add_up_every_gunicorn_worker_and_keep_killed_and_replaced_ones_counts(tmp_path, database_url):
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    leave_stale_counts(metrics_dir)
    config = write_config(tmp_path, PRICED_MOCK)
    env = server_env(config, database_url(), PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    with tollgate_server(env, workers=4) as server:
        before = server_scrape(server.url)
        assert value(before, "litellm_proxy_total_requests_metric_total") == 0  # the stale file was emptied

        barrier = threading.Barrier(40, timeout=30)

        def one(n: int) -> Decimal:
            barrier.wait()
            body = chat_body(user=f"metered-{n % 4}", model="m")
            response = requests.post(f"{server.url}/chat/completions", json=body, headers=AUTH, timeout=30)
            assert response.status_code == 200, response.text
            return Decimal(response.headers["x-litellm-response-cost"])

        with ThreadPoolExecutor(max_workers=40) as pool:
            costs = list(pool.map(one, range(40)))
        assert len(set(costs)) == 1 and costs[0] > 0
        counted = {int(path.stem.split("_")[-1]) for path in metrics_dir.glob("counter_*.db")}
        workers = workers_of(server.process.pid)
        assert len(counted & workers) >= 2, "the calls should have spread over several workers"

        def totals(samples: Samples) -> tuple[float, float]:
            return (
                value(samples, "litellm_proxy_total_requests_metric_total", requested_model="m", status_code="200"),
                value(samples, "litellm_spend_metric_total", model="m"),
            )

        expected = (40, pytest.approx(float(costs[0] * 40), rel=1e-9))
        for _ in range(8):  # whichever worker answers the scrape, the sum is every worker's
            assert totals(server_scrape(server.url)) == expected

        victim = sorted(counted & workers)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (victim in workers_of(server.process.pid) or len(workers_of(server.process.pid)) < 4) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert victim not in workers_of(server.process.pid)
        for _ in range(8):
            assert totals(server_scrape(server.url)) == expected

        # A reload replaces every worker; the counts of the replaced ones stay, the files too.
        before_reload = workers_of(server.process.pid)
        os.kill(server.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now_serving = workers_of(server.process.pid)
            if len(now_serving) == 4 and not now_serving & before_reload:
                break
            time.sleep(0.1)
        assert not workers_of(server.process.pid) & before_reload
        for _ in range(8):
            assert totals(server_scrape(server.url)) == expected
