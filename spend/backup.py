"""A consistent copy of a live SQLite database (`python cli.py backup PATH`).

SQLite's online backup API copies the database as one read transaction: in WAL mode that is a
snapshot the server's workers keep writing past, never waiting for the copy, and the copy holds
every transaction committed before it began and none after. It is written to a temporary file
next to PATH and renamed into place only once `PRAGMA integrity_check` passes on it, so PATH is
either absent or a whole, checked database.

PostgreSQL is backed up with its own tools (`pg_dump`, or the provider's snapshots): see
docs/operations.md.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spend.sqlite import sqlite_path

BUSY_TIMEOUT_SECONDS = 30.0
COUNTED = ("customers", "budgets", "spend_logs", "webhook_events")


class BackupRefused(Exception):
    """The backup cannot be made as asked (the message says why); nothing was written."""


@dataclass(frozen=True)
class BackupResult:
    path: str
    size_bytes: int
    rows: dict[str, int]  # rows per table of COUNTED, in the copy


def backup_sqlite(database_url: str, target: str, report: Callable[[str], None] = lambda _: None) -> BackupResult:
    """Copy the SQLite database of `database_url` to `target` (which must not exist), online."""
    source_path = sqlite_path(database_url)
    if not os.path.exists(source_path):
        raise BackupRefused(f"no SQLite database at {source_path}")
    if os.path.lexists(target):
        raise BackupRefused(f"{target} exists; name a new file")
    directory = Path(target).resolve().parent
    if not directory.is_dir():
        raise BackupRefused(f"{directory} is not a directory")
    handle, partial = tempfile.mkstemp(prefix=f".{Path(target).name}.", suffix=".partial", dir=directory)
    os.close(handle)
    try:
        report(f"copying {source_path} to {target}")
        _copy(source_path, partial)
        rows = _check(partial)
        _publish(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return BackupResult(target, os.path.getsize(target), rows)


def _publish(partial: str, target: str) -> None:
    """Give the checked copy its name, never replacing a file that appeared there meanwhile."""
    try:
        os.link(partial, target)
    except FileExistsError:
        raise BackupRefused(f"{target} exists; name a new file") from None
    except OSError:  # a filesystem without hard links
        if os.path.lexists(target):
            raise BackupRefused(f"{target} exists; name a new file") from None
        os.rename(partial, target)


def _copy(source_path: str, partial: str) -> None:
    """One backup step over the whole database: a snapshot, with writers going on meanwhile (a
    copy in several steps would start over each time a worker commits)."""
    source = sqlite3.connect(source_path, timeout=BUSY_TIMEOUT_SECONDS)
    destination = sqlite3.connect(partial)
    try:
        source.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        source.backup(destination)  # the copy is in WAL mode like its source, and whole in one file
    finally:
        destination.close()
        source.close()


def _check(path: str) -> dict[str, int]:
    """`PRAGMA integrity_check` on the copy, and its row counts; BackupRefused if it is damaged."""
    copy = sqlite3.connect(path)  # not read-only: closing it removes the WAL files that opening made
    try:
        verdict = [row[0] for row in copy.execute("PRAGMA integrity_check").fetchall()]
        if verdict != ["ok"]:
            raise BackupRefused(f"the copy failed its integrity check: {'; '.join(verdict[:5])}")
        tables = {row[0] for row in copy.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {name: copy.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0] for name in COUNTED if name in tables}
    finally:
        copy.close()
