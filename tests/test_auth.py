"""The master key guards every route but the health probes (SPEC §3)."""

from __future__ import annotations

import pytest

from tests.helpers import MASTER_KEY, assert_openai_error, chat_body
from tests.servers import free_port

GUARDED = [
    ("post", "/chat/completions"),
    ("post", "/v1/chat/completions"),
    ("get", "/models"),
    ("get", "/v1/models"),
    ("get", "/customer/info?end_user_id=x"),
    ("get", "/end_user/info?end_user_id=x"),
]


@pytest.mark.parametrize(("method", "path"), GUARDED)
def test_missing_key_is_refused(client, method, path):
    response = getattr(client, method)(path, json=chat_body(model="mock-model"))
    error = assert_openai_error(response, 401, "auth_error")
    assert error["message"] == "Authentication Error, No api key passed in."


@pytest.mark.parametrize(("method", "path"), GUARDED)
def test_wrong_key_is_refused(client, method, path):
    response = getattr(client, method)(
        path, json=chat_body(model="mock-model"), headers={"Authorization": "Bearer sk-wrong"}
    )
    error = assert_openai_error(response, 401, "auth_error")
    assert error["message"] == "Authentication Error, Invalid proxy server token passed"


@pytest.mark.parametrize("value", [MASTER_KEY, f"Basic {MASTER_KEY}", "Bearer", "Bearer "])
def test_authorization_without_bearer_scheme_is_refused(client, value):
    response = client.get("/models", headers={"Authorization": value})
    assert_openai_error(response, 401, "auth_error")


@pytest.mark.parametrize("header", ["Authorization", "api-key", "x-api-key"])
def test_master_key_is_accepted_in_each_header(client, header):
    value = f"Bearer {MASTER_KEY}" if header == "Authorization" else MASTER_KEY
    assert client.get("/models", headers={header: value}).status_code == 200


def test_refused_call_charges_nothing(client, store):
    client.post("/chat/completions", json=chat_body(model="mock-model", user="intruder"))
    assert store.admin.get_customer("intruder") is None
    assert store.ledger.spend_logs() == []


@pytest.mark.parametrize("path", ["/health/liveliness", "/health/liveness"])
def test_liveness_is_open(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response.get_json() == "I'm alive!"


def test_readiness_is_open_and_reports_the_database(client):
    response = client.get("/health/readiness")
    assert response.status_code == 200
    assert response.get_json() == {"status": "healthy", "db": "connected", "models": 2, "warnings": []}


def test_readiness_is_503_when_the_database_is_unreachable(make_app, tmp_path):
    app = make_app()
    store = app.extensions["tollgate"].store
    store.engine.close()
    if hasattr(store.engine, "path"):  # SQLite: a file in a folder that does not exist
        store.engine.path = str(tmp_path / "missing-dir" / "db.sqlite")
    else:  # PostgreSQL: a port nothing listens on
        store.engine.url = f"postgresql://postgres@127.0.0.1:{free_port()}/gone"
    assert_openai_error(app.test_client().get("/health/readiness"), 503, "service_unavailable")
