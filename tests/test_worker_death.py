"""A worker killed in the middle of its calls (OOM killer, SIGKILL): the budget its calls had
reserved is given back when gunicorn sees it go, not when the reservations expire."""

from __future__ import annotations

import os
import signal
import threading
import time

import requests

from spend.engines import open_store
from tests.fake_upstream import FakeUpstream
from tests.helpers import AUTH, sql_rows
from tests.servers import tollgate_server
from tests.test_gunicorn import gpt_test_env


def workers_of(master: int) -> list[int]:
    children = []
    for task in os.listdir(f"/proc/{master}/task"):
        try:
            with open(f"/proc/{master}/task/{task}/children") as listed:
                children.extend(int(pid) for pid in listed.read().split())
        except OSError:
            continue
    return children


def wait_for(condition, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_killed_workers_reservations_are_given_back_at_once(tmp_path, database_url, stores):
    url = database_url()
    with FakeUpstream(delay_ms=60_000) as upstream:
        env = gpt_test_env(tmp_path, url, upstream.url)
        with tollgate_server(env, workers=1) as server:
            created = requests.post(
                f"{server.url}/customer/new", json={"user_id": "held", "max_budget": 100}, headers=AUTH, timeout=10
            )
            assert created.status_code == 200, created.text
            store = open_store(url)
            stores.append(store)

            def held() -> int:
                return sql_rows(store, "SELECT COUNT(*) FROM reservations")[0][0]

            body = {"model": "gpt-test", "user": "held", "messages": [{"role": "user", "content": "hi"}]}
            calls = [
                threading.Thread(
                    target=lambda: _post_ignoring_errors(f"{server.url}/chat/completions", body), daemon=True
                )
                for _ in range(3)
            ]
            for call in calls:
                call.start()
            wait_for(lambda: held() == 3)  # three calls in flight, each holding its reservation
            [worker] = workers_of(server.process.pid)

            os.kill(worker, signal.SIGKILL)
            wait_for(lambda: held() == 0)
            reserved = sql_rows(store, "SELECT reserved_units FROM spend_accounts WHERE user_id = ?", ("held",))
            assert [int(units) for (units,) in reserved] == [0]
            assert "exited holding 3 budget reservations; released" in server.log()
            for call in calls:
                call.join(timeout=10)


def _post_ignoring_errors(url: str, body: dict) -> None:
    try:
        requests.post(url, json=body, headers=AUTH, timeout=90)
    except requests.RequestException:
        pass  # the worker serving it was killed
