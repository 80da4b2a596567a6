"""Upstream errors say which deployment and status they came from, never pass for Tollgate's own,
and never carry a credential: not to the client, not into the spend log, not into the log (SPEC §9)."""

from __future__ import annotations

import json
import logging

import pytest

from tests.helpers import AUTH, MASTER_KEY, PRICED, UPSTREAM, UPSTREAM_KEY, assert_openai_error, chat_body


@pytest.mark.parametrize(
    ("answer", "upstream_text"),
    [
        ({"json": {"error": {"message": "Not found", "type": "not_found"}}}, "Not found"),
        ({"json": {"detail": "Not Found"}}, '{"detail": "Not Found"}'),
        ({"body": "404 page not found", "content_type": "text/plain"}, "404 page not found"),
    ],
)
def test_an_upstream_404_never_looks_like_tollgates_own(client, upstream, answer, upstream_text):
    upstream.post(f"{UPSTREAM}/chat/completions", status=404, **answer)
    relayed = client.post("/chat/completions", json=chat_body(), headers=AUTH)
    own = client.get("/no/such/route", headers=AUTH)

    error = assert_openai_error(relayed, 404, "upstream_error")
    deployment = relayed.headers["x-litellm-model-id"]
    assert error["message"] == f"Upstream 'gpt-test' (deployment {deployment}) returned HTTP 404: {upstream_text}"
    assert relayed.headers["x-tollgate-upstream-status"] == "404"
    own_error = assert_openai_error(own, 404, "not_found")
    assert own_error["message"] != error["message"] and "x-tollgate-upstream-status" not in own.headers


ECHOES = [
    {"error": {"message": f"Invalid header: Authorization: Bearer {UPSTREAM_KEY}", "type": "invalid_request_error"}},
    {"headers": {"Authorization": f"Bearer {UPSTREAM_KEY}", "Accept": "*/*"}, "origin": "10.0.0.1"},  # httpbin's echo
    {"error": {"message": f"key {UPSTREAM_KEY} was revoked"}},
]


@pytest.mark.parametrize("status", [400, 401, 500])
@pytest.mark.parametrize("echo", ECHOES)
def test_an_upstream_that_echoes_the_deployments_key_never_passes_it_on(make_app, upstream, caplog, status, echo):
    models = [
        {
            "model_name": "gpt-test",
            "litellm_params": {"model": "openai/gpt-test", "api_base": UPSTREAM, "api_key": UPSTREAM_KEY, **PRICED},
        }
    ]
    client = make_app(model_list=models, litellm_settings={"num_retries": 1}).test_client()
    for _ in range(2 if status >= 500 else 1):  # a 500 is retried once: both answers echo
        upstream.post(f"{UPSTREAM}/chat/completions", status=status, json=echo)
    with caplog.at_level(logging.INFO):
        response = client.post("/chat/completions", json=chat_body(user="victim"), headers=AUTH)

    error = assert_openai_error(response, status if status < 500 else 502)
    assert "[redacted]" in error["message"]
    store = client.application.extensions["tollgate"].store
    [row] = store.ledger.spend_logs("victim")
    assert row.status == "failure" and UPSTREAM_KEY not in row.error and "[redacted]" in row.error
    assert UPSTREAM_KEY not in caplog.text


def test_the_master_key_is_scrubbed_when_an_upstream_echoes_it(make_app, upstream, caplog):
    # A Tollgate in front of another proxy that shares its key: the upstream key is the master key.
    models = [{"model_name": "chained", "litellm_params": {"model": "openai/chained", "api_base": UPSTREAM,
                                                           "api_key": "os.environ/LITELLM_MASTER_KEY"}}]  # fmt: skip
    client = make_app(model_list=models).test_client()
    upstream.post(f"{UPSTREAM}/chat/completions", status=401, json={"error": {"message": f"bad key {MASTER_KEY}"}})
    with caplog.at_level(logging.INFO):
        response = client.post("/chat/completions", json=chat_body(model="chained", user="u"), headers=AUTH)
    assert assert_openai_error(response, 401)["message"].endswith("bad key [redacted]")
    assert MASTER_KEY not in caplog.text


def test_an_azure_upstream_echoing_its_api_key_header_is_scrubbed(make_app, upstream):
    models = [{"model_name": "az", "litellm_params": {"model": "azure/dep", "api_base": "https://az.test",
                                                      "api_key": "az-secret-key-1"}}]  # fmt: skip
    client = make_app(model_list=models).test_client()
    upstream.post(
        "https://az.test/openai/deployments/dep/chat/completions",
        status=400,
        json={"error": {"message": 'request headers: {"api-key": "az-secret-key-1"}'}},
        params={"api-version": "2024-10-21"},
    )
    error = assert_openai_error(client.post("/chat/completions", json=chat_body(model="az"), headers=AUTH), 400)
    assert "az-secret-key-1" not in error["message"] and json.dumps(error).count("[redacted]") == 1


def test_a_key_at_the_length_limit_of_an_upstream_message_leaves_no_part_of_itself(client, upstream):
    # Cut to 500 characters first, the key's first half would survive; it is taken out before the cut.
    upstream.post(
        f"{UPSTREAM}/chat/completions", status=400, json={"error": {"message": "x" * 490 + f" {UPSTREAM_KEY}"}}
    )
    error = assert_openai_error(client.post("/chat/completions", json=chat_body(), headers=AUTH), 400)
    assert UPSTREAM_KEY[:6] not in error["message"]
