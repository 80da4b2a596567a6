"""Load balancing, retries on another deployment, cooldown, and one charge per call (SPEC §4)."""

from __future__ import annotations

import pytest

from tests.fake_upstream import FakeUpstream
from tests.helpers import AUTH, PRICED, assert_openai_error, chat_body, sql_rows


@pytest.fixture
def group(make_app):
    """An app whose `gpt-test` group is one local upstream per given status."""
    upstreams = []

    def make(statuses, num_retries=2, **behaviour):
        models = []
        for status in statuses:
            upstream = FakeUpstream(status=status, **behaviour)
            upstream.start()
            upstreams.append(upstream)
            models.append(
                {
                    "model_name": "gpt-test",
                    "litellm_params": {
                        "model": "openai/gpt-test",
                        "api_base": upstream.url,
                        "api_key": "none",
                        **PRICED,
                    },
                }
            )
        app = make_app(model_list=models, litellm_settings={"num_retries": num_retries})
        return app.test_client(), upstreams, app.extensions["tollgate"].store

    yield make
    for upstream in upstreams:
        upstream.stop()


def test_a_failing_deployment_is_covered_by_its_siblings(group):
    client, (good_a, bad, good_b), store = group([200, 500, 200])
    statuses = [
        client.post("/chat/completions", json=chat_body(user="covered"), headers=AUTH).status_code for _ in range(100)
    ]
    assert statuses == [200] * 100
    rows = store.ledger.spend_logs("covered", limit=1000)
    assert len(rows) == 100 and {row.status for row in rows} == {"success"}
    assert store.admin.get_customer("covered").spend_units == 100 * 60_000_000_000
    assert good_a.calls + good_b.calls == 100
    assert 1 <= bad.calls < 100  # tried, then cooled down after repeated failures
    [(retried,)] = sql_rows(store, "SELECT COUNT(*) FROM spend_logs WHERE attempts = 2")
    assert retried == bad.calls


def test_streams_are_retried_before_their_first_byte(group):
    client, (bad, good), store = group([500, 500], num_retries=0)
    response = client.post("/chat/completions", json=chat_body(stream=True, user="s"), headers=AUTH)
    assert_openai_error(response, 502, "upstream_error")


def test_retries_stop_at_num_retries(group):
    client, upstreams, store = group([500, 500, 500], num_retries=1)
    assert_openai_error(client.post("/chat/completions", json=chat_body(user="unlucky"), headers=AUTH), 502)
    assert sum(u.calls for u in upstreams) == 2
    [row] = store.ledger.spend_logs("unlucky")
    assert (row.status, row.cost_units) == ("failure", 0)
    assert sql_rows(store, "SELECT attempts FROM spend_logs") == [(2,)]


def test_client_errors_are_not_retried(group):
    client, upstreams, _ = group([400, 200, 200], num_retries=2)
    statuses = {client.post("/chat/completions", json=chat_body(), headers=AUTH).status_code for _ in range(30)}
    assert 400 in statuses and 200 in statuses
    assert upstreams[0].calls + upstreams[1].calls + upstreams[2].calls == 30


def test_rpm_weights_spread_the_load(make_app):
    upstreams = [FakeUpstream(), FakeUpstream()]
    for upstream in upstreams:
        upstream.start()
    try:
        models = [
            {
                "model_name": "g",
                "litellm_params": {"model": "openai/g", "api_base": upstreams[0].url, "rpm": 900, **PRICED},
            },
            {
                "model_name": "g",
                "litellm_params": {"model": "openai/g", "api_base": upstreams[1].url, "rpm": 100, **PRICED},
            },
        ]
        client = make_app(model_list=models).test_client()
        for _ in range(200):
            assert client.post("/chat/completions", json=chat_body(model="g"), headers=AUTH).status_code == 200
        assert upstreams[0].calls > 3 * upstreams[1].calls > 0
    finally:
        for upstream in upstreams:
            upstream.stop()
