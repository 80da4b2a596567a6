"""Fixtures: an app on a real database (a SQLite file, or a PostgreSQL schema of its own with
`TOLLGATE_TEST_DATABASE_URL=postgres`), a test client, and a real local upstream at the HTTP boundary."""

from __future__ import annotations

import pytest

from app import create_app
from config import load_config
from spend.engines import open_store
from tests.databases import ENGINES, SERVER, ThrowawayPostgres, suite_engine
from tests.helpers import AUTH, MASTER_KEY, write_config
from tests.local_upstream import LocalUpstream


@pytest.fixture(scope="session")
def postgres_server():
    """This run's throwaway PostgreSQL database (created on first use, dropped at the end)."""
    server = ThrowawayPostgres(SERVER)
    yield server
    server.drop()


def _new_database(request, directory, engine: str | None, name: str) -> str:
    if (engine or suite_engine()) == "postgres":
        return request.getfixturevalue("postgres_server").fresh_schema_url()
    return f"sqlite:///{directory / name}"


@pytest.fixture
def database_url(request, tmp_path):
    """`database_url(engine)`: a new, empty database of that engine for this test."""

    def make(engine: str | None = None, name: str = "tollgate.db") -> str:
        return _new_database(request, tmp_path, engine, name)

    return make


@pytest.fixture(scope="module")
def module_database_url(request, tmp_path_factory):
    """`database_url` for module-scoped fixtures (a server shared by a module's tests): each call a
    new, empty database."""

    def make(engine: str | None = None, name: str = "tollgate.db") -> str:
        return _new_database(request, tmp_path_factory.mktemp("database"), engine, name)

    return make


@pytest.fixture
def stores():
    """Stores a test opens: each closed (its connections and pool) when the test ends."""
    opened = []
    yield opened
    for store in opened:
        store.engine.close()


@pytest.fixture(params=ENGINES)
def engine(request):
    """Run the test once on each engine: the storage contract."""
    return request.param


@pytest.fixture
def contract_store(engine, database_url, stores):
    """A migrated store on a new database of `engine`."""
    store = open_store(database_url(engine, "spend.db"))
    stores.append(store)
    store.engine.migrate()
    return store


@pytest.fixture
def sqlite_store(database_url, stores):
    """A migrated store on a new SQLite file: for what only the SQLite engine has."""
    store = open_store(database_url("sqlite", "spend.db"))
    stores.append(store)
    store.engine.migrate()
    return store


@pytest.fixture
def environ(database_url):
    return {"LITELLM_MASTER_KEY": MASTER_KEY, "DATABASE_URL": database_url()}


@pytest.fixture
def make_app(tmp_path, environ, upstream, stores):
    """Build an app from config sections: `make_app(model_list=[…], litellm_settings={…})`.

    Its calls to upstream hosts (all but 127.0.0.1) reach the test's `upstream` server.
    """

    def make(model_list=None, **sections):
        path = write_config(tmp_path, model_list, **sections)
        app = create_app(load_config(str(path), environ), http=upstream.transport())
        stores.append(app.extensions["tollgate"].store)
        return app

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
