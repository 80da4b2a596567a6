"""Fixtures: an app on a real SQLite file, a test client, and a real local upstream at the HTTP boundary."""

from __future__ import annotations

import pytest

from app import create_app
from config import load_config
from tests.helpers import AUTH, MASTER_KEY, write_config
from tests.local_upstream import LocalUpstream


@pytest.fixture
def environ(tmp_path):
    return {"LITELLM_MASTER_KEY": MASTER_KEY, "DATABASE_URL": f"sqlite:///{tmp_path / 'tollgate.db'}"}


@pytest.fixture
def make_app(tmp_path, environ, upstream):
    """Build an app from config sections: `make_app(model_list=[…], litellm_settings={…})`.

    Its calls to upstream hosts (all but 127.0.0.1) reach the test's `upstream` server.
    """

    def make(model_list=None, **sections):
        path = write_config(tmp_path, model_list, **sections)
        return create_app(load_config(str(path), environ), http=upstream.transport())

    return make


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def store(app):
    return app.extensions["tollgate"].store


@pytest.fixture
def upstream():
    """The upstream HTTP server: every registered answer must be used, nothing else answers."""
    server = LocalUpstream()
    yield server
    server.stop()
    assert not server.unfired(), f"registered but never requested: {server.unfired()}"


@pytest.fixture
def auth():
    return dict(AUTH)
