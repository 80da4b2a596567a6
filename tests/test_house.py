"""Which module may know which (STYLE.md, "The house"), checked on the imports of the source."""

from __future__ import annotations

import ast

import pytest

from tests.servers import REPO

ENGINES = {"spend.sqlite", "spend.postgres", "sqlite3", "psycopg", "psycopg_pool"}


def imports(relative: str) -> set[str]:
    """The modules a source file imports, as dotted names (`from a import b` counts `a` and `a.b`)."""
    tree = ast.parse((REPO / relative).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def sources(*folders_or_files: str) -> list[str]:
    files = []
    for entry in folders_or_files:
        path = REPO / entry
        files += [str(p.relative_to(REPO)) for p in sorted(path.glob("*.py"))] if path.is_dir() else [entry]
    return files


@pytest.mark.parametrize("source", sources("routes", "webhooks", "calls.py", "app.py", "gateway.py", "errors.py"))
def test_no_route_call_or_dispatcher_imports_an_engine(source):
    assert not imports(source) & ENGINES


@pytest.mark.parametrize("source", sources("spend/pricing.py", "spend/periods.py", "spend/budgets.py"))
def test_the_money_core_imports_no_storage_http_flask_registry_or_webhooks(source):
    forbidden = ("spend.store", "spend.ledger", "flask", "http", "requests", "providers.http", "webhooks", *ENGINES)
    found = imports(source)
    assert not {name for name in found if name.startswith(forbidden)}
    assert "providers.PROVIDERS" not in found and "providers" not in found


@pytest.mark.parametrize(
    "source", sources("spend/store.py", "spend/ledger.py", "spend/admin.py", "spend/outbox.py", "spend/idempotency.py")
)
def test_the_storage_contract_and_roles_know_no_engine_and_no_webhook_payload(source):
    found = imports(source)
    assert not found & ENGINES
    assert not {name for name in found if name.startswith("webhooks")}
