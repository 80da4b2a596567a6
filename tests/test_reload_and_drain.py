"""The server's life under its Procfile command (SPEC §11): `kill -HUP` reads config.yaml again
(a broken one is refused while the workers keep serving), and SIGTERM drains: new requests get
503 at once, readiness says so, and the calls in flight finish and are charged."""

from __future__ import annotations

import os
import signal
import threading
import time

import requests
import yaml

from spend.engines import open_store
from tests.fake_upstream import FakeUpstream
from tests.helpers import AUTH, PRICED, write_config
from tests.servers import server_env, tollgate_server


def served_models(server) -> list[str]:
    return [model["id"] for model in requests.get(f"{server.url}/v1/models", headers=AUTH, timeout=5).json()["data"]]


def wait_for(condition, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except requests.RequestException:
            pass
        time.sleep(0.1)
    return False


def mock_model(name: str) -> dict:
    return {"model_name": name, "litellm_params": {"model": f"mock/{name}", **PRICED}}


def test_hup_applies_a_good_config_and_refuses_a_broken_one_while_serving(tmp_path, database_url):
    path = write_config(tmp_path, [mock_model("first")])
    with tollgate_server(server_env(path, database_url()), workers=2) as server:
        assert served_models(server) == ["first"]

        write_config(tmp_path, [mock_model("first"), mock_model("second")])
        os.kill(server.process.pid, signal.SIGHUP)
        assert wait_for(lambda: served_models(server) == ["first", "second"]), server.log()[-3000:]
        assert wait_for(lambda: "config reloaded" in server.log())

        document = yaml.safe_load(path.read_text())
        document["model_list"].append({"model_name": "typo", "litellm_params": {"model": "azur/x"}})
        document["general_settings"]["enforce_user_params"] = True
        path.write_text(yaml.safe_dump(document))
        os.kill(server.process.pid, signal.SIGHUP)
        assert wait_for(lambda: "config reload refused" in server.log()), server.log()[-3000:]
        log = server.log()
        assert "unknown provider 'azur'" in log and "did you mean 'enforce_user_param'" in log

        time.sleep(1)  # the workers the refused reload started are up
        assert server.process.poll() is None
        assert served_models(server) == ["first", "second"]
        body = {"model": "second", "user": "after-reload", "messages": [{"role": "user", "content": "hi"}]}
        assert requests.post(f"{server.url}/chat/completions", json=body, headers=AUTH, timeout=10).status_code == 200
        assert requests.get(f"{server.url}/health/readiness", timeout=5).status_code == 200


def test_a_reload_finishes_the_call_in_flight_and_never_refuses_a_new_one(tmp_path, database_url):
    with FakeUpstream(delay_ms=3000) as slow:
        models = [
            {
                "model_name": "gpt-test",
                "litellm_params": {"model": "openai/gpt-test", "api_base": slow.url, "api_key": "none", **PRICED},
            },
            mock_model("quick"),
        ]
        path = write_config(tmp_path, models)
        with tollgate_server(server_env(path, database_url()), workers=2) as server:
            answers = []
            body = {"model": "gpt-test", "user": "long", "messages": [{"role": "user", "content": "think"}]}
            caller = threading.Thread(
                target=lambda: answers.append(
                    requests.post(f"{server.url}/chat/completions", json=body, headers=AUTH, timeout=30)
                )
            )
            caller.start()
            time.sleep(1.0)
            os.kill(server.process.pid, signal.SIGHUP)
            quick = {"model": "quick", "user": "meanwhile", "messages": [{"role": "user", "content": "hi"}]}
            statuses = set()
            until = time.monotonic() + 3
            while time.monotonic() < until:
                statuses.add(
                    requests.post(f"{server.url}/chat/completions", json=quick, headers=AUTH, timeout=10).status_code
                )
            caller.join(30)
            assert statuses == {200}
            assert answers and answers[0].status_code == 200


def test_sigterm_drains_new_requests_get_503_at_once_and_the_call_in_flight_is_charged(tmp_path, database_url, stores):
    url = database_url()
    with FakeUpstream(delay_ms=3000) as slow:
        models = [
            {
                "model_name": "gpt-test",
                "litellm_params": {"model": "openai/gpt-test", "api_base": slow.url, "api_key": "none", **PRICED},
            }
        ]
        with tollgate_server(server_env(write_config(tmp_path, models), url), workers=1) as server:
            answers = []
            body = {"model": "gpt-test", "user": "in-flight", "messages": [{"role": "user", "content": "think"}]}
            caller = threading.Thread(
                target=lambda: answers.append(
                    requests.post(f"{server.url}/chat/completions", json=body, headers=AUTH, timeout=30)
                )
            )
            caller.start()
            time.sleep(1.0)  # the call is waiting on the upstream
            os.kill(server.process.pid, signal.SIGTERM)
            time.sleep(0.3)

            started = time.monotonic()
            ready = requests.get(f"{server.url}/health/readiness", timeout=5)
            refused = requests.post(
                f"{server.url}/chat/completions", json={**body, "user": "late"}, headers=AUTH, timeout=5
            )
            elapsed = time.monotonic() - started
            assert (ready.status_code, refused.status_code) == (503, 503)
            assert refused.json()["error"]["type"] == "service_unavailable" and elapsed < 1.5

            caller.join(30)
            assert answers and answers[0].status_code == 200
            server.process.wait(30)

    store = open_store(url)
    stores.append(store)
    [row] = store.ledger.spend_logs("in-flight")
    assert row.status == "success" and row.cost_units == 60_000_000_000
    assert store.ledger.spend_logs("late") == []
