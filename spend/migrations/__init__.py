"""Numbered schema migrations, one folder of `NNNN_name.sql` files per database dialect.

Each backend applies the files it has not recorded in its `schema_migrations` table, in order,
inside one write transaction, so workers starting at once apply each migration exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_ROOT = Path(__file__).parent


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def load(dialect: str) -> list[Migration]:
    """The migrations of `dialect` (`sqlite`, `postgres`), ordered by version."""
    migrations = []
    for path in sorted((_ROOT / dialect).glob("[0-9][0-9][0-9][0-9]_*.sql")):
        version = int(path.name[:4])
        migrations.append(Migration(version, path.stem[5:], tuple(_statements(path.read_text()))))
    return migrations


def _statements(script: str) -> list[str]:
    """Split a migration file into statements (our files keep `;` out of strings and comments)."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [statement.strip() for statement in "\n".join(lines).split(";") if statement.strip()]
