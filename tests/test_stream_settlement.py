"""A stream is never delivered complete unless it is charged (SPEC §4): the call is settled before
its final event (`data: [DONE]`, `response.completed`) is relayed, and when the store cannot record
the charge the client gets an error event instead of that final event.

The store is made to fail for real: a SQLite connection switched to read-only, or the PostgreSQL
connection cut by a TCP relay (tests/test_database_outage.py's `Relay`).
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from tests.databases import suite_engine
from tests.helpers import AUTH, PRICED, UPSTREAM, chat_body
from tests.test_database_outage import Relay, through
from tests.test_responses_and_completions import responses_answer, responses_stream_body
from tests.test_streaming import ANTHROPIC_EVENTS

DONE = b"data: [DONE]\n\n"
BODIES = {
    "chat": ("/chat/completions", lambda user: chat_body(user=user, model="mock-model", stream=True)),
    "completions": ("/completions", lambda user: {"model": "mock-model", "prompt": "hi", "stream": True, "user": user}),
    "responses": ("/responses", lambda user: {"model": "mock-model", "input": "hi", "stream": True, "user": user}),
}


@pytest.fixture
def failing_store(request, make_app, environ):
    """`make(model_list)` -> `(client, store, fail)`: an app on the suite's engine whose store
    `fail()` makes unable to write."""
    relay = None
    if suite_engine() == "postgres":
        url = request.getfixturevalue("postgres_server").fresh_schema_url()
        parts = urlsplit(url)
        relay = Relay((parts.hostname, parts.port or 5432))
        environ["DATABASE_URL"] = through(url, relay.port)

    def make(model_list=None):
        app = make_app(model_list=model_list)
        store = app.extensions["tollgate"].store

        def fail() -> None:
            if relay is not None:
                relay.cut()
            else:  # this thread's connection, the one the streamed response settles on
                store.engine.read(lambda connection: connection.execute("PRAGMA query_only = ON"))

        return app.test_client(), store, fail

    yield make
    if relay is not None:
        relay.close()


def events(data: bytes) -> list[bytes]:
    return [block + b"\n\n" for block in data.split(b"\n\n") if block]


@pytest.mark.parametrize("api", sorted(BODIES))
def test_stream_whose_charge_fails_ends_with_an_error_event_instead_of_its_final_event(failing_store, api):
    client, store, fail = failing_store()
    path, body = BODIES[api]
    response = client.post(path, json=body("unpayable"), headers=AUTH, buffered=False)
    assert response.status_code == 200
    fail()
    data = b"".join(response.response)
    response.close()

    assert DONE not in data and b"response.completed" not in data
    last = events(data)[-1]
    if api == "responses":
        assert last.startswith(b"event: error\ndata: ")
        error = json.loads(last.split(b"data: ", 1)[1])
        assert error["type"] == "error" and error["code"] == "service_unavailable"
    else:
        assert last.startswith(b"data: ")
        error = json.loads(last[len(b"data: ") :])
        assert list(error) == ["error"]
        assert error["error"]["type"] == "service_unavailable" and error["error"]["code"] == "503"
    assert "could not record" in json.dumps(error)


@pytest.mark.parametrize("api", sorted(BODIES))
def test_stream_is_charged_before_its_final_event_reaches_the_client(client, store, api):
    path, body = BODIES[api]
    response = client.post(path, json=body(f"prompt-{api}"), headers=AUTH, buffered=False)
    final = b"response.completed" if api == "responses" else DONE
    chunks = iter(response.response)
    for chunk in chunks:
        if final in chunk:
            break
    else:
        pytest.fail("the stream ended without its final event")
    info = client.get("/customer/info", query_string={"end_user_id": f"prompt-{api}"}, headers=AUTH).get_json()
    [row] = store.ledger.spend_logs(f"prompt-{api}")
    assert info["spend"] > 0 and row.status == "success" and row.estimated is False
    assert list(chunks) == []
    response.close()


def test_stream_the_client_leaves_is_still_charged_an_estimate(client, store):
    response = client.post("/chat/completions", json=chat_body("leaving", "mock-model", stream=True),
                           headers=AUTH, buffered=False)  # fmt: skip
    chunks = iter(response.response)
    next(chunks), next(chunks)
    response.close()
    [row] = store.ledger.spend_logs("leaving")
    assert row.status == "success" and row.estimated is True and row.cost_units > 0


OPENAI_CHUNKS = [
    {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
     "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]},
    {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt", "choices": [],
     "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}},
]  # fmt: skip
OPENAI_PARAMS = {"model": "openai/gpt-test", "api_base": UPSTREAM, "api_key": "k", **PRICED}
PROVIDERS = {
    "openai": (
        OPENAI_PARAMS,
        f"{UPSTREAM}/chat/completions",
        "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in OPENAI_CHUNKS) + "data: [DONE]\n\n",
    ),
    "anthropic": (
        {"model": "anthropic/claude-3-5-sonnet-20241022", "api_key": "sk-ant", **PRICED},
        "https://api.anthropic.com/v1/messages",
        "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in ANTHROPIC_EVENTS),
    ),
}


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
@pytest.mark.parametrize("charge_fails", [False, True], ids=["charged", "store-fails"])
def test_relayed_stream_ends_with_done_only_once_charged(failing_store, upstream, provider, charge_fails):
    params, url, sse_body = PROVIDERS[provider]
    client, store, fail = failing_store([{"model_name": "m", "litellm_params": params}])
    upstream.post(url, body=sse_body, content_type="text/event-stream")
    response = client.post("/chat/completions", json=chat_body("relayed", "m", stream=True), headers=AUTH,
                           buffered=False)  # fmt: skip
    if charge_fails:
        fail()
    chunks = list(response.response)
    response.close()
    if charge_fails:
        assert DONE not in chunks
        assert json.loads(chunks[-1][len(b"data: ") :])["error"]["type"] == "service_unavailable"
    else:
        assert chunks[-1] == DONE
        assert store.ledger.spend_logs("relayed")[0].estimated is False


@pytest.mark.parametrize("named", [True, False], ids=["named-events", "nameless-events"])
@pytest.mark.parametrize("charge_fails", [False, True], ids=["charged", "store-fails"])
def test_relayed_responses_stream_ends_with_its_completed_event_only_once_charged(
    failing_store, upstream, named, charge_fails
):
    answer = responses_answer(answer_id="resp_held")
    sse_body = responses_stream_body(answer)
    if not named:  # OpenAI-compatible servers that give each event's type in its data only
        sse_body = "".join(line + "\n" for line in sse_body.splitlines() if not line.startswith("event: "))
    client, store, fail = failing_store([{"model_name": "m", "litellm_params": OPENAI_PARAMS}])
    upstream.post(f"{UPSTREAM}/responses", body=sse_body, content_type="text/event-stream")
    response = client.post("/responses", json={"model": "m", "input": "hi", "stream": True, "user": "held"},
                           headers=AUTH, buffered=False)  # fmt: skip
    if charge_fails:
        fail()
    chunks = list(response.response)
    response.close()
    completed = [chunk for chunk in chunks if b'"response.completed"' in chunk]
    if charge_fails:
        assert completed == [] and chunks[-1].startswith(b"event: error\n")
    else:
        assert completed == [chunks[-1]] and b"".join(chunks) == sse_body.encode()
        assert store.ledger.spend_logs("held")[0].response_id == "resp_held"
