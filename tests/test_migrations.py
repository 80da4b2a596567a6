"""Schema migrations as an operator meets them: `cli.py migrate`, a web process's start, the release
phase, progress on a long one, and copying a SQLite database into PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest

from app import MigrationsPending, prepare_database
from providers.base import Usage
from spend import migrations
from spend.engines import open_store
from spend.store import CallRecord, Customer, Settlement
from tests.helpers import MASTER_KEY, PRICED, sql_rows, write_config
from tests.servers import REPO, free_port, refused_start
from webhooks.events import Notify, announcements

MODELS = [{"model_name": "mock-model", "litellm_params": {"model": "mock/mock-model", **PRICED}}]


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "cli.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def cli_env(tmp_path, url: str, **extra: str) -> dict:
    config = write_config(tmp_path, MODELS)
    return {"PATH": os.environ["PATH"], "CONFIG_FILE_PATH": str(config), "LITELLM_MASTER_KEY": MASTER_KEY,
            "DATABASE_URL": url, **extra}  # fmt: skip


# What a database made by migrations 1 to 5 still needs.
AFTER_FIVE = [migration.label for migration in migrations.load("sqlite")[5:]]


def an_old_sqlite_database(path) -> None:
    """A SQLite database as an older version left it (migrations 1 to 5)."""
    connection = sqlite3.connect(path)
    connection.execute(migrations.TABLE)
    for migration in migrations.load("sqlite")[:5]:
        migration.apply(connection)
        connection.execute(
            "INSERT INTO schema_migrations VALUES (?, ?, '2026-01-01T00:00:00Z')", (migration.version, migration.name)
        )
    connection.execute(
        "INSERT INTO customers (user_id, created_at, updated_at) VALUES ('old', '2026-01-01', '2026-01-01')"
    )
    connection.execute("INSERT INTO spend_accounts (user_id, scope, spend_units) VALUES ('old', '', 7000000)")
    connection.commit()
    connection.close()


def test_cli_migrate_prints_each_step_and_is_a_no_op_the_second_time(tmp_path, engine, database_url, stores):
    env = cli_env(tmp_path, database_url(engine))
    first = cli("migrate", env=env)
    assert first.returncode == 0, first.stderr
    labels = [migration.label for migration in migrations.load(engine)]
    for label in labels:
        assert f"migration {label}: applying" in first.stdout and f"migration {label}: done in" in first.stdout
    assert f"schema current ({len(labels)} migration(s) applied now)" in first.stdout
    again = cli("migrate", env=env)
    assert again.returncode == 0 and "applying" not in again.stdout and "(0 migration(s) applied now)" in again.stdout


def test_cli_migrate_names_an_unreachable_database_in_one_line(tmp_path):
    port = free_port()
    done = cli("migrate", env=cli_env(tmp_path, f"postgresql://tollgate:pw-secret@127.0.0.1:{port}/ledger"))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr and "pw-secret" not in done.stderr
    assert done.stderr.startswith(f"tollgate: PostgreSQL database 'ledger' on 127.0.0.1:{port}: ")


def test_a_web_process_migrates_an_existing_database_with_progress_before_it_serves(tmp_path):
    path = tmp_path / "old.db"
    an_old_sqlite_database(path)
    store = open_store(f"sqlite:///{path}")
    lines = []
    prepare_database(store, "start", lines.append)
    store.engine.close()
    assert lines[0::2] == [f"migration {label}: applying" for label in AFTER_FIVE]
    assert [line.rsplit(" in ", 1)[0] for line in lines[1::2]] == [f"migration {label}: done" for label in AFTER_FIVE]
    reopened = open_store(f"sqlite:///{path}")
    assert reopened.admin.get_customer("old").spend_units == 7_000_000
    reopened.engine.close()


def test_with_migrations_in_the_release_phase_a_web_process_refuses_a_database_that_needs_one(tmp_path):
    path = tmp_path / "old.db"
    an_old_sqlite_database(path)
    store = open_store(f"sqlite:///{path}")
    with pytest.raises(MigrationsPending, match=r"0006_exact_money_plain_outbox.*python cli.py migrate"):
        prepare_database(store, "release", print)
    assert store.engine.pending_migrations() == AFTER_FIVE  # nothing applied
    store.engine.close()


def test_with_migrations_in_the_release_phase_a_new_database_is_still_created(tmp_path, engine, database_url, stores):
    store = open_store(database_url(engine))
    stores.append(store)
    lines = []
    prepare_database(store, "release", lines.append)
    assert store.engine.pending_migrations() == []
    assert len(lines) == 1 and lines[0].startswith("created the schema of a new ")


def test_the_server_refuses_to_start_on_a_database_left_to_the_release_phase(tmp_path):
    path = tmp_path / "old.db"
    an_old_sqlite_database(path)
    [line], stderr = refused_start(cli_env(tmp_path, f"sqlite:///{path}", TOLLGATE_MIGRATIONS="release"))
    assert f"needs {len(AFTER_FIVE)} migration(s) ({', '.join(AFTER_FIVE)})" in line and "Traceback" not in stderr


def test_a_long_migration_reports_how_long_it_has_run(tmp_path, monkeypatch):
    monkeypatch.setattr(migrations, "REPORT_EVERY_SECONDS", 0.0)
    path = tmp_path / "big.db"
    an_old_sqlite_database(path)
    connection = sqlite3.connect(path)
    connection.executemany(
        "INSERT INTO spend_logs (request_id, customer_id, model_group, provider_model, deployment_id, prompt_tokens, "
        "completion_tokens, cached_tokens, cache_creation_tokens, reasoning_tokens, cost_units, priced, estimated, "
        "status, latency_ms, started_at, created_at) VALUES (?, 'old', 'm', 'mock/m', 'd', 1, 1, 0, 0, 0, ?, 1, 0, "
        "'success', 1, '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
        ((f"r{n}", n) for n in range(20_000)),
    )
    connection.commit()
    connection.close()
    store = open_store(f"sqlite:///{path}")
    lines = []
    store.engine.migrate(report=lines.append)
    store.engine.close()
    assert any("still running" in line and "so far" in line for line in lines), lines


def test_copy_sqlite_brings_every_table_into_an_empty_postgresql_database(tmp_path, database_url, stores):
    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    source = open_store(source_url)
    source.engine.migrate()
    now = time.time()
    source.admin.create_budget("tier", {"max_budget_units": 10_000_000 * 10**12}, now)
    source.admin.create_customer(Customer("rich", blocked=True), {"max_budget_units": 5 * 10**12}, now)
    for n, cost in enumerate((10**20, 3)):
        request_id = str(uuid.uuid4())
        events, on_spend = announcements(Notify(token="t"), "rich", cost, request_id, now + n)
        record = CallRecord(request_id, "rich", "m", "mock/m", "d", Usage(prompt_tokens=1), cost, now + n, now + n)
        source.ledger.record_call(record, Settlement(events=events, on_spend=on_spend))
    source.engine.close()
    target_url = database_url("postgres")
    done = cli("copy-sqlite", str(tmp_path / "source.db"), env=cli_env(tmp_path, target_url))
    assert done.returncode == 0, done.stderr
    assert "copy spend_logs: 2 rows" in done.stdout and "copy webhook_events: 2 rows" in done.stdout
    target = open_store(target_url)
    stores.append(target)
    customer = target.admin.get_customer("rich")
    assert (customer.spend_units, customer.blocked, customer.budget.max_budget_units) == (10**20 + 3, True, 5 * 10**12)
    assert target.admin.get_budget("tier").max_budget_units == 10_000_000 * 10**12
    assert [row.cost_units for row in target.ledger.spend_logs("rich")] == [3, 10**20]
    assert [event.event for event in target.outbox.list(None, 10)] == ["spend_tracked", "spend_tracked"]
    assert sql_rows(target, "SELECT priced, estimated FROM spend_logs ORDER BY seq") == [(True, False)] * 2
    again = cli("copy-sqlite", str(tmp_path / "source.db"), env=cli_env(tmp_path, target_url))
    assert again.returncode == 1 and "already has rows in customers" in again.stderr
