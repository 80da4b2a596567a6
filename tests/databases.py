"""The databases tests run on: a SQLite file in the test's folder, or a PostgreSQL schema of its own.

PostgreSQL: each test run creates one throwaway database on the server named by
`TOLLGATE_TEST_POSTGRES` (default `postgresql://postgres@127.0.0.1:5432/postgres`, the server
`.ci/run` makes sure of), gives every test a fresh schema in it, and drops the database at the
end. With `TOLLGATE_TEST_DATABASE_URL=postgres` the whole suite's apps and servers run on
PostgreSQL instead of SQLite files. A server that cannot be reached fails those tests with the
reason; they are never skipped.
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import quote

import psycopg
import pytest

SERVER = os.environ.get("TOLLGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
ENGINES = ("sqlite", "postgres")


def suite_engine() -> str:
    """The engine of the whole suite's apps and servers: `TOLLGATE_TEST_DATABASE_URL` (postgres or sqlite)."""
    chosen = os.environ.get("TOLLGATE_TEST_DATABASE_URL", "sqlite").strip().lower()
    if chosen.startswith(("postgres", "postgresql")):
        return "postgres"
    if chosen in ("", "sqlite"):
        return "sqlite"
    raise pytest.UsageError(f"TOLLGATE_TEST_DATABASE_URL must be sqlite or postgres, got {chosen!r}")


class ThrowawayPostgres:
    """One database for this test run, a schema in it for each test."""

    def __init__(self, server: str):
        self.server = server
        self.name = f"tollgate_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        try:
            with psycopg.connect(server, autocommit=True, connect_timeout=5) as connection:
                connection.execute(f'CREATE DATABASE "{self.name}"')
        except psycopg.OperationalError as exc:
            pytest.fail(
                f"PostgreSQL is not reachable at {server} ({str(exc).strip().splitlines()[0]}). "
                "Start it (.ci/run does), or name another server in TOLLGATE_TEST_POSTGRES.",
                pytrace=False,
            )
        self.url = self._as_url(self.name)

    def _as_url(self, dbname: str, options: str | None = None) -> str:
        parts = psycopg.conninfo.conninfo_to_dict(self.server)
        user = parts.get("user", "postgres")
        password = f":{quote(parts['password'])}" if parts.get("password") else ""
        host, port = parts.get("host", "127.0.0.1"), parts.get("port", 5432)
        url = f"postgresql://{quote(user)}{password}@{host}:{port}/{dbname}"
        return f"{url}?options={quote(options)}" if options else url

    def fresh_schema_url(self) -> str:
        """A `DATABASE_URL` whose tables go into a new, empty schema of the run's database."""
        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {schema}")
        return self._as_url(self.name, f"-csearch_path={schema}")

    def drop(self) -> None:
        with psycopg.connect(self.server, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
