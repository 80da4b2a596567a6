"""Webhooks that are never lost, under real gunicorn workers: sink outages and killed workers."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.helpers import AUTH, write_config
from tests.servers import server_env, tollgate_server
from tests.webhook_sink import WebhookSink


def hooked_env(directory, database_url, sink_url):
    models = [
        {
            "model_name": "m",
            "litellm_params": {"model": "mock/m", "input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002},
        }
    ]
    config = write_config(directory, models, general_settings={"alerting": ["webhook"]})
    return server_env(config, database_url, WEBHOOK_URL=sink_url, WEBHOOK_RETRY_MAX_SECONDS="2")


def call(url, user):
    body = {"model": "m", "user": user, "messages": [{"role": "user", "content": "hello"}]}
    return requests.post(f"{url}/chat/completions", json=body, headers=AUTH, timeout=30).status_code


def test_events_survive_a_twenty_second_sink_outage_under_load(tmp_path, database_url):
    with WebhookSink() as sink:
        with tollgate_server(hooked_env(tmp_path, database_url(), sink.url), workers=4) as server:
            sink.stop()
            stop_at = time.monotonic() + 20
            served = []

            def load(worker: int) -> None:
                n = 0
                while time.monotonic() < stop_at and n < 2000:
                    served.append(call(server.url, f"load-{worker}-{n % 3}"))
                    n += 1
                    time.sleep(0.01)

            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(load, range(8)))
            sink.start()
            assert set(served) == {200}
            events = sink.wait_for(len(served), timeout=60)
            assert len(events) == len(served) > 100
            assert len({event["event_id"] for event in events}) == len(served)


def test_pending_events_survive_killing_every_worker(tmp_path, database_url):
    with WebhookSink() as sink:
        env = hooked_env(tmp_path, database_url(), sink.url)
        sink.stop()
        with tollgate_server(env, workers=4) as server:
            barrier = threading.Barrier(40, timeout=30)

            def one(n: int) -> int:
                barrier.wait()
                return call(server.url, f"killed-{n}")

            with ThreadPoolExecutor(max_workers=40) as pool:
                assert list(pool.map(one, range(40))) == [200] * 40
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(10)

        sink.start()
        with tollgate_server(env, workers=2):
            events = sink.wait_for(40, timeout=90)
        assert sorted(event["customer_id"] for event in events) == sorted(f"killed-{n}" for n in range(40))
