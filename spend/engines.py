"""Which engine a `DATABASE_URL` names: the one place that imports them (for the app factory,
the gunicorn config and the operator commands)."""

from __future__ import annotations

from spend.postgres import open_postgres
from spend.sqlite import open_sqlite
from spend.store import Store


def is_postgres(database_url: str) -> bool:
    return database_url.startswith(("postgres://", "postgresql://"))


def open_store(database_url: str) -> Store:
    """The store for a `DATABASE_URL`; nothing is connected until first use."""
    return open_postgres(database_url) if is_postgres(database_url) else open_sqlite(database_url)
