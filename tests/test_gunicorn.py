"""Tollgate under its Procfile command: real gunicorn workers, the suite's database, a local upstream."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
import requests

from spend.engines import open_store
from tests.fake_upstream import FakeUpstream
from tests.helpers import AUTH, PRICED, sql_rows, write_config
from tests.servers import REPO, free_port, procfile_command, refused_start, server_env, tollgate_server

CUSTOMERS = [f"customer-{n}" for n in range(8)]
# 20 prompt + 20 completion tokens at 0.001 / 0.002 per token: 0.06 a call.
PER_CALL = 20 * Decimal(str(PRICED["input_cost_per_token"])) + 20 * Decimal(str(PRICED["output_cost_per_token"]))


def gpt_test_env(tmp_path, database_url, upstream_url, **model_params):
    models = [
        {
            "model_name": "gpt-test",
            "litellm_params": {
                "model": "openai/gpt-test",
                "api_base": upstream_url,
                "api_key": "none",
                **PRICED,
                **model_params,
            },
        }
    ]
    return server_env(write_config(tmp_path, models), database_url)


def test_concurrent_calls_over_four_workers_are_charged_exactly(tmp_path, database_url, stores):
    url = database_url()
    with FakeUpstream(delay_ms=200) as upstream:
        env = gpt_test_env(tmp_path, url, upstream.url)
        with tollgate_server(env, workers=4) as server:
            barrier = threading.Barrier(400, timeout=30)

            def one_call(n: int) -> int:
                body = {"model": "gpt-test", "user": CUSTOMERS[n % 8], "messages": [{"role": "user", "content": "hi"}]}
                barrier.wait()
                return requests.post(f"{server.url}/chat/completions", json=body, headers=AUTH, timeout=60).status_code

            with ThreadPoolExecutor(max_workers=400) as pool:
                statuses = Counter(pool.map(one_call, range(400)))

            assert statuses == {200: 400}, (statuses, server.log()[-3000:])
            for customer in CUSTOMERS:
                info = requests.get(
                    f"{server.url}/customer/info", params={"end_user_id": customer}, headers=AUTH, timeout=10
                ).json()
                assert Decimal(repr(info["spend"])) == 50 * PER_CALL == Decimal("3")
            worker_pids = {line.split("pid: ")[1] for line in server.log().splitlines() if "Booting worker" in line}
            assert len(worker_pids) == 4
        assert upstream.calls == 400

    store = open_store(url)
    stores.append(store)
    [(count, total)] = sql_rows(
        store, "SELECT COUNT(*), units_sum(cost_units) FROM spend_logs WHERE status = 'success'"
    )
    assert (count, int(total)) == (400, 400 * int(PER_CALL * 10**12))
    spends = sql_rows(store, "SELECT user_id, spend_units FROM spend_accounts WHERE scope = ''")
    assert sorted((user, int(units)) for user, units in spends) == [(c, 50 * int(PER_CALL * 10**12)) for c in CUSTOMERS]


def test_long_call_is_not_killed_by_the_worker_timeout(tmp_path, database_url):
    # A worker (gevent or gthread) reports to the arbiter about once a second whatever its calls do, so a
    # timeout of 1 s races that heartbeat; 3 s leaves it room, and the call lasts twice as long.
    with FakeUpstream(delay_ms=6000) as upstream:
        env = gpt_test_env(tmp_path, database_url(), upstream.url)
        env["GUNICORN_CMD_ARGS"] = "--timeout 3"
        with tollgate_server(env, workers=1) as server:
            body = {"model": "gpt-test", "user": "patient", "messages": [{"role": "user", "content": "think"}]}
            response = requests.post(f"{server.url}/chat/completions", json=body, headers=AUTH, timeout=30)
            assert response.status_code == 200
            assert "WORKER TIMEOUT" not in server.log()


def test_port_and_web_concurrency_are_honoured(tmp_path, database_url):
    with FakeUpstream() as upstream:
        env = gpt_test_env(tmp_path, database_url(), upstream.url)
        with tollgate_server(env, workers=3) as server:
            assert requests.get(f"{server.url}/health/liveliness", timeout=5).json() == "I'm alive!"
            deadline = time.monotonic() + 10
            while server.log().count("Booting worker") < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.log().count("Booting worker") == 3


def run_procfile(env, seconds=30):
    """Run the Procfile command with only `env` for Tollgate's settings; it is expected to exit."""
    base = {name: value for name, value in os.environ.items() if name not in ("LITELLM_MASTER_KEY", "DATABASE_URL")}
    return subprocess.run(
        procfile_command(),
        cwd=REPO,
        env={**base, **env, "PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=seconds,
    )


def test_server_refuses_to_start_without_a_master_key(tmp_path, database_url):
    env = gpt_test_env(tmp_path, database_url(), "http://127.0.0.1:9/v1")
    del env["LITELLM_MASTER_KEY"]
    result = run_procfile(env)
    assert result.returncode != 0
    assert "LITELLM_MASTER_KEY" in result.stderr
    assert "Booting worker" not in result.stderr


def test_server_refuses_a_broken_config_listing_every_problem(tmp_path, database_url):
    env = gpt_test_env(tmp_path, database_url(), "http://127.0.0.1:9/v1", rpm="fast")
    (tmp_path / "config.yaml").write_text((tmp_path / "config.yaml").read_text().replace("openai/", "azur/"))
    result = run_procfile(env)
    assert result.returncode != 0
    assert "model_list[0].litellm_params.model: unknown provider 'azur'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("bad", [b"{not json", b"[]"])
def test_bad_input_leaves_real_workers_healthy(tmp_path, database_url, bad):
    with FakeUpstream() as upstream:
        env = gpt_test_env(tmp_path, database_url(), upstream.url)
        with tollgate_server(env, workers=2) as server:
            for _ in range(20):
                response = requests.post(f"{server.url}/chat/completions", data=bad, headers=AUTH, timeout=10)
                assert response.status_code == 400 and "Traceback" not in response.text
            ok = requests.post(
                f"{server.url}/chat/completions",
                headers=AUTH,
                timeout=10,
                json={"model": "gpt-test", "user": "fine", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert ok.status_code == 200


def test_an_unknown_worker_model_stops_the_start_with_one_line(tmp_path, database_url):
    env = gpt_test_env(tmp_path, database_url(), "http://127.0.0.1:9/v1")
    lines, stderr = refused_start({**env, "TOLLGATE_WORKER": "eventlet"})
    assert lines == ["tollgate: TOLLGATE_WORKER must be gevent or gthread, got 'eventlet'"], stderr


def test_the_default_worker_model_is_gevent_and_gthread_can_be_chosen(tmp_path, database_url):
    with FakeUpstream() as upstream:
        for model, gevent_loaded in (("", True), ("gthread", False)):
            env = gpt_test_env(tmp_path, database_url(name=f"{model or 'default'}.db"), upstream.url)
            if model:
                env["TOLLGATE_WORKER"] = model
            with tollgate_server(env, workers=1) as server:
                body = {"model": "gpt-test", "user": "either", "messages": [{"role": "user", "content": "hi"}]}
                assert requests.post(f"{server.url}/chat/completions", json=body, headers=AUTH, timeout=30).ok
                [worker] = _children(server.process.pid)
                with open(f"/proc/{worker}/maps") as maps:  # gevent's compiled modules, mapped or not
                    assert ("gevent" in maps.read()) is gevent_loaded


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listed:
        return [int(child) for child in listed.read().split()]
