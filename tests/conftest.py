"""Fixtures: an app on a real SQLite file, a test client, and `responses` at the HTTP boundary."""

from __future__ import annotations

import pytest
import responses

from app import create_app
from config import load_config
from tests.helpers import AUTH, MASTER_KEY, write_config


@pytest.fixture
def environ(tmp_path):
    return {"LITELLM_MASTER_KEY": MASTER_KEY, "DATABASE_URL": f"sqlite:///{tmp_path / 'tollgate.db'}"}


@pytest.fixture
def make_app(tmp_path, environ):
    """Build an app from config sections: `make_app(model_list=[…], litellm_settings={…})`."""

    def make(model_list=None, **sections):
        path = write_config(tmp_path, model_list, **sections)
        return create_app(load_config(str(path), environ))

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
    """Fake upstream HTTP: every registered response must be used, nothing else is reachable."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def auth():
    return dict(AUTH)
