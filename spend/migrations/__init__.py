"""Numbered schema migrations, one folder per database dialect (`sqlite/`, `postgres/`).

A migration is `NNNN_name.sql` (statements separated by `;`) or, where data must be reshaped in
Python, `NNNN_name.py` with `upgrade(connection)`. Each engine applies the ones its
`schema_migrations` table does not record, in order, inside one write transaction that first
takes the database's migration lock, so processes and boxes starting at once apply each
migration exactly once. Every step is reported (`Progress`), with the time a long one has taken
so far while it runs.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).parent
TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations "
    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
)
REPORT_EVERY_SECONDS = 2.0


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"

    def apply(self, connection: Any) -> None:
        """Run the migration on `connection`, inside the caller's transaction."""
        if self.path.suffix == ".py":
            spec = importlib.util.spec_from_file_location(f"migration_{self.label}", self.path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            module.upgrade(connection)
            return
        for statement in _statements(self.path.read_text()):
            connection.execute(statement)


def load(dialect: str) -> list[Migration]:
    """The migrations of `dialect` (`sqlite`, `postgres`), ordered by version."""
    paths = [
        *(_ROOT / dialect).glob("[0-9][0-9][0-9][0-9]_*.sql"),
        *(_ROOT / dialect).glob("[0-9][0-9][0-9][0-9]_*.py"),
    ]
    return sorted((Migration(int(path.name[:4]), path.stem[5:], path) for path in paths), key=lambda m: m.version)


def pending_ones(connection: Any, available: list[Migration]) -> list[Migration]:
    """The migrations `connection`'s database has not recorded (its table must exist)."""
    applied = {row[0] for row in connection.execute("SELECT version FROM schema_migrations").fetchall()}
    return [migration for migration in available if migration.version not in applied]


def pending(connection: Any, available: list[Migration], has_table: bool) -> list[str]:
    """The labels of the migrations not applied yet; all of them on an empty database (no table)."""
    todo = pending_ones(connection, available) if has_table else available
    return [migration.label for migration in todo]


def is_fresh(pending: list[str]) -> bool:
    """Whether pending labels mean an empty database: nothing applied, not even the first."""
    return bool(pending) and pending[0].startswith("0001_")


class Progress:
    """Applies migrations one by one, telling `report` each step and, during a long one, how long
    it has run so far (the engine calls `tick` while a statement works)."""

    def __init__(self, report: Callable[[str], None] | None):
        self.report = report or (lambda line: None)
        self.current: str | None = None
        self.started = self.last = 0.0

    def run(self, migration: Migration, connection: Any, stamp: str | None = None) -> None:
        self.current, self.started = migration.label, time.monotonic()
        self.last = self.started
        self.report(f"migration {migration.label}: applying")
        migration.apply(connection)
        connection.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, stamp or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
        )
        self.report(f"migration {migration.label}: done in {time.monotonic() - self.started:.1f} s")
        self.current = None

    def tick(self) -> int:
        """Called while a statement runs: report every REPORT_EVERY_SECONDS. Returns 0 (go on)."""
        now = time.monotonic()
        if self.current is not None and now - self.last >= REPORT_EVERY_SECONDS:
            self.last = now
            self.report(f"migration {self.current}: still running, {now - self.started:.0f} s so far")
        return 0


def _statements(script: str) -> list[str]:
    """Split a migration file into statements (our files keep `;` out of strings and comments)."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [statement.strip() for statement in "\n".join(lines).split(";") if statement.strip()]
