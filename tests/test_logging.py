"""Logs that answer "why": JSON lines, the level from LITELLM_LOG, request ids on every response
and in the call's log line and spend log, and one line per admin action without secrets."""

from __future__ import annotations

import io
import json
import logging
import uuid

import pytest
import requests

import cli
import logs
from config import ConfigError, load_config
from spend.engines import open_store
from tests.helpers import AUTH, MASTER_KEY, UPSTREAM_KEY, assert_openai_error, chat_body, write_config
from tests.servers import server_env, tollgate_server

CLIENT_ID = "client-req_01.A:b-2"


@pytest.fixture
def emitted():
    """`capture()` after an app is built sends what Tollgate's own log handler writes to `buffer`
    (the handler and its formatter are the real ones); the default handler is back afterwards."""
    buffer = io.StringIO()

    def capture() -> io.StringIO:
        [handler] = [h for h in logging.getLogger("tollgate").handlers if h.get_name() == logs.HANDLER_NAME]
        handler.setStream(buffer)
        return buffer

    yield capture
    logs.configure_logging()


def json_lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def mock_call(client, request_id: str | None = None, **body):
    headers = {**AUTH, **({"x-request-id": request_id} if request_id is not None else {})}
    return client.post("/chat/completions", json=chat_body(model="mock-model", **body), headers=headers)


def test_json_format_writes_one_object_per_line_with_the_call_fields(make_app, environ, emitted):
    environ["LOG_FORMAT"] = "json"
    client = make_app().test_client()
    buffer = emitted()
    assert mock_call(client, CLIENT_ID).status_code == 200
    lines = json_lines(buffer)
    [call] = [line for line in lines if line["logger"] == "tollgate.calls"]
    assert {"time", "level", "logger", "message", "request_id"} <= set(call)
    assert call["level"] == "INFO" and call["request_id"] == CLIENT_ID
    assert call["time"].endswith("Z") and "T" in call["time"]
    assert call["message"].startswith(f"call request_id={CLIENT_ID} ")


def test_a_streamed_calls_json_line_carries_its_request_id(make_app, environ, emitted):
    environ["LOG_FORMAT"] = "json"
    client = make_app().test_client()
    buffer = emitted()
    response = mock_call(client, CLIENT_ID, stream=True)
    assert b"[DONE]" in response.get_data()  # the call is logged once the stream has been relayed
    [call] = [line for line in json_lines(buffer) if line["logger"] == "tollgate.calls"]
    assert call["request_id"] == CLIENT_ID


def test_json_lines_carry_extra_fields_and_tracebacks(make_app, environ, emitted):
    environ["LOG_FORMAT"] = "json"
    make_app()
    buffer = emitted()
    log = logging.getLogger("tollgate.test")
    log.info("with fields", extra={"customer": "c-1", "units": 12})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    fields, failure = json_lines(buffer)
    assert fields["customer"] == "c-1" and fields["units"] == 12 and fields["message"] == "with fields"
    assert failure["level"] == "ERROR" and "RuntimeError: boom" in failure["exception"]


def test_text_format_is_the_default(make_app, emitted):
    client = make_app().test_client()
    buffer = emitted()
    mock_call(client, CLIENT_ID)
    [line] = [line for line in buffer.getvalue().splitlines() if " tollgate.calls " in line]
    assert " INFO tollgate.calls call request_id=" + CLIENT_ID in line


@pytest.mark.parametrize(("value", "level"), [("DEBUG", logging.DEBUG), ("warning", logging.WARNING),
                                              ("ERROR", logging.ERROR), (None, logging.INFO)])  # fmt: skip
def test_the_level_comes_from_litellm_log(make_app, environ, emitted, value, level):
    if value is not None:
        environ["LITELLM_LOG"] = value
    client = make_app().test_client()
    buffer = emitted()
    assert logging.getLogger("tollgate").level == level
    mock_call(client)
    assert ("call request_id=" in buffer.getvalue()) == (level <= logging.INFO)


@pytest.mark.parametrize(
    ("name", "value"), [("LITELLM_LOG", "LOUD"), ("LITELLM_LOG", "20"), ("LOG_FORMAT", "xml"), ("LOG_FORMAT", "JSONL")]
)
def test_a_bad_log_setting_is_a_config_error_naming_it(tmp_path, name, value):
    path = write_config(tmp_path)
    environ = {"LITELLM_MASTER_KEY": MASTER_KEY, name: value}
    with pytest.raises(ConfigError) as refused:
        load_config(str(path), environ)
    assert [p for p in refused.value.problems if p.startswith(f"environment.{name}: ")]


def test_check_config_reports_a_bad_log_level(tmp_path, monkeypatch, capsys):
    path = write_config(tmp_path)
    monkeypatch.setenv("LITELLM_MASTER_KEY", MASTER_KEY)
    monkeypatch.setenv("LITELLM_LOG", "VERBOSE")
    assert cli.check_config(str(path)) == 1
    assert "environment.LITELLM_LOG: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL" in capsys.readouterr().err


def test_a_safe_x_request_id_becomes_the_call_id(client, store):
    response = mock_call(client, CLIENT_ID, user="rid-customer")
    assert response.status_code == 200
    assert response.headers["x-request-id"] == CLIENT_ID
    assert response.headers["x-litellm-call-id"] == CLIENT_ID
    [row] = store.ledger.spend_logs("rid-customer")
    assert row.request_id == CLIENT_ID


@pytest.mark.parametrize("given", ["has space", "a" * 129, "semi;colon", 'quote"d', "ünïcode", ""])
def test_an_unsafe_x_request_id_is_replaced_by_a_fresh_uuid(client, store, given):
    response = mock_call(client, given, user="unsafe-rid")
    assert response.status_code == 200
    used = response.headers["x-request-id"]
    assert used != given and uuid.UUID(used)
    assert response.headers["x-litellm-call-id"] == used
    assert [row.request_id for row in store.ledger.spend_logs("unsafe-rid")] == [used]


def test_an_x_request_id_of_an_earlier_call_gets_a_fresh_id_and_both_calls_are_charged(client, store):
    first = mock_call(client, CLIENT_ID, user="retrier")
    second = mock_call(client, CLIENT_ID, user="retrier")
    assert first.status_code == second.status_code == 200
    assert first.headers["x-request-id"] == CLIENT_ID
    fresh = second.headers["x-request-id"]
    assert fresh != CLIENT_ID and uuid.UUID(fresh) and second.headers["x-litellm-call-id"] == fresh
    assert sorted(row.request_id for row in store.ledger.spend_logs("retrier")) == sorted([CLIENT_ID, fresh])


def _not_found(client, headers):
    response = client.get("/no/such/route", headers=headers)
    assert_openai_error(response, 404, "not_found")
    return response


def _bad_body(client, headers):
    response = client.post("/chat/completions", data=b"{not json", headers={**headers, **AUTH})
    assert_openai_error(response, 400, "invalid_request_error")
    return response


def _unauthenticated(client, headers):
    response = client.post("/customer/new", json={"user_id": "x"}, headers=headers)
    assert_openai_error(response, 401)
    return response


def _stream(client, headers):
    response = client.post(
        "/chat/completions", json=chat_body(model="mock-model", stream=True), headers={**headers, **AUTH}
    )
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert b"[DONE]" in response.get_data()
    return response


def _admin(client, headers):
    response = client.get("/customer/list", headers={**headers, **AUTH})
    assert response.status_code == 200
    return response


def _probe(client, headers):
    response = client.get("/health/liveliness", headers=headers)
    assert response.status_code == 200
    return response


@pytest.mark.parametrize("send", [_not_found, _bad_body, _unauthenticated, _stream, _admin, _probe])
@pytest.mark.parametrize("given", [CLIENT_ID, None, "not safe!"])
def test_every_response_carries_the_request_id_it_was_served_under(client, send, given):
    response = send(client, {"x-request-id": given} if given is not None else {})
    used = response.headers["x-request-id"]
    assert used == given if given == CLIENT_ID else uuid.UUID(used)


ADMIN_ACTIONS = [
    ("/budget/new", {"budget_id": "tier-1", "max_budget": 10, "budget_duration": "30d"}, "budget.new", ["tier-1"],
     ["budget_duration", "max_budget"]),
    ("/budget/update", {"budget_id": "tier-1", "rpm_limit": 5}, "budget.update", ["tier-1"], ["rpm_limit"]),
    ("/customer/new", {"user_id": "acme", "alias": "Acme", "max_budget": 3}, "customer.new", ["acme"],
     ["alias", "max_budget"]),
    ("/customer/update", {"user_id": "acme", "budget_id": "tier-1"}, "customer.update", ["acme"], ["budget_id"]),
    ("/customer/block", {"user_ids": ["acme", "globex"]}, "customer.block", ["acme", "globex"], []),
    ("/end_user/unblock", {"user_ids": ["acme"]}, "customer.unblock", ["acme"], []),
    ("/customer/delete", {"user_ids": ["acme", "globex"]}, "customer.delete", ["acme", "globex"], []),
    ("/budget/delete", {"id": "tier-1"}, "budget.delete", ["tier-1"], []),
]  # fmt: skip


def test_each_admin_action_is_one_line_saying_who_did_what_to_which_ids(make_app, environ, emitted):
    environ["LOG_FORMAT"] = "json"
    client = make_app().test_client()
    buffer = emitted()
    changed_by = {"LiteLLM-Changed-By": "ops@example.com"}
    for path, body, action, _, _ in ADMIN_ACTIONS:
        response = client.post(path, json=body, headers={**AUTH, **changed_by, "x-request-id": f"admin-{action}"})
        assert response.status_code == 200, (path, response.get_json())
    actions = [line for line in json_lines(buffer) if line["logger"] == "tollgate.admin"]
    assert [(line["action"], line["ids"], line["fields"]) for line in actions] == [
        (action, ids, fields) for _, _, action, ids, fields in ADMIN_ACTIONS
    ]
    for line in actions:
        assert line["changed_by"] == "ops@example.com"
        assert line["request_id"] == f"admin-{line['action']}"
    for secret in (MASTER_KEY, UPSTREAM_KEY, "Bearer"):
        assert secret not in buffer.getvalue()


def test_an_admin_action_without_changed_by_is_the_master_keys_and_a_failed_one_is_not_logged(client, caplog):
    with caplog.at_level(logging.INFO, logger="tollgate.admin"):
        assert client.post("/customer/new", json={"user_id": "solo"}, headers=AUTH).status_code == 200
        assert_openai_error(client.post("/customer/new", json={"user_id": "solo"}, headers=AUTH), 400)
        assert_openai_error(client.post("/budget/delete", json={"id": "nope"}, headers=AUTH), 404)
    [record] = [record for record in caplog.records if record.name == "tollgate.admin"]
    assert record.getMessage() == 'admin customer.new ids=["solo"] by="master_key" fields=-'
    assert MASTER_KEY not in caplog.text


def test_under_gunicorn_every_line_is_json_with_log_format_json(tmp_path, database_url):
    url = database_url()
    store = open_store(url)
    store.engine.migrate()  # an existing database: the master's start-up prints no schema lines
    store.engine.close()
    env = server_env(write_config(tmp_path), url, LOG_FORMAT="json")
    with tollgate_server(env, workers=1) as server:
        body = chat_body(model="mock-model")
        response = requests.post(
            f"{server.url}/chat/completions", json=body, headers={**AUTH, "x-request-id": CLIENT_ID}, timeout=30
        )
        assert response.status_code == 200 and response.headers["x-request-id"] == CLIENT_ID
        lines = [json.loads(line) for line in server.log().splitlines()]
    assert any(line["logger"] == "gunicorn.error" and "Booting worker" in line["message"] for line in lines)
    [call] = [line for line in lines if line["logger"] == "tollgate.calls"]
    assert call["request_id"] == CLIENT_ID
