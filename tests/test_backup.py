"""`python cli.py backup PATH`: a consistent copy of the live SQLite database while a real server
keeps serving and writing; refused with one line for PostgreSQL or an existing PATH."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests

import cli
from providers.base import Usage
from spend.engines import open_store
from spend.store import CallRecord
from tests.helpers import AUTH, MASTER_KEY, chat_body, write_config
from tests.servers import REPO, server_env, tollgate_server

PREFILLED = 3000


def prefill(database_url: str, stores) -> None:
    """Spend-log rows enough that the copy takes a moment, written before the server starts."""
    store = open_store(database_url)
    stores.append(store)
    store.engine.migrate()
    now = time.time()
    for index in range(PREFILLED):
        store.ledger.record_call(
            CallRecord(
                request_id=f"prefill-{index}",
                customer_id=f"customer-{index % 50}",
                model_group="mock-model",
                provider_model="mock/mock-model",
                deployment_id="dep",
                usage=Usage(prompt_tokens=10, completion_tokens=5),
                cost_units=1_000_000,
                started_at=now,
                ended_at=now,
                error="x" * 400,  # bulk: the copy takes long enough for calls to land during it
            )
        )
    store.engine.close()


class Caller:
    """Threads posting calls to the server until stopped; counts the answers by status."""

    def __init__(self, url: str, threads: int = 4):
        self.url, self.done, self.statuses = url, threading.Event(), []
        self.threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self):
        with requests.Session() as session:
            while not self.done.is_set():
                body = chat_body(model="mock-model", user=f"live-{uuid.uuid4().hex[:6]}")
                response = session.post(f"{self.url}/chat/completions", json=body, headers=AUTH, timeout=30)
                self.statuses.append(response.status_code)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        for thread in self.threads:
            thread.join(30)

    def ok(self) -> int:
        return self.statuses.count(200)


def copied_rows(path) -> tuple[str, str, int]:
    """The copy's integrity verdict, journal mode and spend-log rows."""
    copy = sqlite3.connect(path)
    try:
        verdict = copy.execute("PRAGMA integrity_check").fetchone()[0]
        mode = copy.execute("PRAGMA journal_mode").fetchone()[0]
        return verdict, mode, copy.execute("SELECT COUNT(*) FROM spend_logs").fetchone()[0]
    finally:
        copy.close()


def test_backup_of_a_live_database_is_whole_and_consistent_while_calls_go_on(tmp_path, database_url, stores):
    url = database_url("sqlite")
    prefill(url, stores)
    env = server_env(write_config(tmp_path), url)
    target = tmp_path / "backups" / "tollgate-copy.db"
    target.parent.mkdir()
    with tollgate_server(env) as server, Caller(server.url) as caller:
        while caller.ok() < 20:  # calls are landing
            time.sleep(0.01)
        before = caller.ok()
        done = subprocess.run(
            [sys.executable, "cli.py", "backup", str(target)],
            cwd=REPO,
            env={"PATH": "/usr/bin:/bin", **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        after = caller.ok()
        while caller.ok() < after + 20:  # the server keeps serving after the copy
            time.sleep(0.01)
    assert done.returncode == 0, done.stderr
    assert "integrity ok" in done.stdout.splitlines()[-1]
    assert set(caller.statuses) == {200}
    assert after > before  # calls were answered (and written) while the command ran
    assert [path.name for path in target.parent.iterdir()] == [target.name]  # no partial or WAL files left
    verdict, mode, rows = copied_rows(target)
    assert verdict == "ok" and mode == "wal"  # a restored copy runs in WAL mode like the original
    # Every call answered before the copy began is in it; none answered after it ended can be.
    assert PREFILLED + before <= rows <= PREFILLED + after
    copy = open_store(f"sqlite:///{target}")
    stores.append(copy)
    assert copy.engine.pending_migrations() == []
    assert copy.admin.get_customer("customer-7").spend_units == PREFILLED // 50 * 1_000_000


@pytest.fixture
def operator_env(tmp_path, monkeypatch):
    """The environment `python cli.py` runs in, with `DATABASE_URL` set by the test."""
    monkeypatch.setenv("CONFIG_FILE_PATH", str(write_config(tmp_path)))
    monkeypatch.setenv("LITELLM_MASTER_KEY", MASTER_KEY)

    def use(database_url: str) -> None:
        monkeypatch.setenv("DATABASE_URL", database_url)

    return use


def test_backup_refuses_postgresql_and_names_pg_dump(operator_env, tmp_path, capsys):
    operator_env("postgresql://tollgate@127.0.0.1:5432/tollgate")
    assert cli.main(["backup", str(tmp_path / "copy.db")]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "pg_dump" in line
    assert not (tmp_path / "copy.db").exists()


def test_backup_refuses_an_existing_path_and_leaves_it_alone(operator_env, database_url, stores, tmp_path, capsys):
    url = database_url("sqlite")
    store = open_store(url)
    stores.append(store)
    store.engine.migrate()
    operator_env(url)
    target = tmp_path / "precious.db"
    target.write_bytes(b"keep me")
    assert cli.main(["backup", str(target)]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line == f"tollgate: backup refused: {target} exists; name a new file"
    assert target.read_bytes() == b"keep me"


def test_backup_refuses_a_missing_database(operator_env, tmp_path, capsys):
    operator_env(f"sqlite:///{tmp_path / 'absent.db'}")
    assert cli.main(["backup", str(tmp_path / "copy.db")]) == 1
    assert capsys.readouterr().err.strip().endswith(f"no SQLite database at {tmp_path / 'absent.db'}")
    assert not (tmp_path / "absent.db").exists() and not (tmp_path / "copy.db").exists()


def test_backup_refuses_a_path_in_a_missing_directory(operator_env, database_url, stores, tmp_path, capsys):
    url = database_url("sqlite")
    store = open_store(url)
    stores.append(store)
    store.engine.migrate()
    operator_env(url)
    assert cli.main(["backup", str(tmp_path / "nowhere" / "copy.db")]) == 1
    assert capsys.readouterr().err.strip().endswith("is not a directory")
