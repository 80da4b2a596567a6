"""Storage faults under a running instance: a SQLite file deleted or replaced, a read-only
database, a WAL that grew in a burst.

While the store cannot write, calls answer 503 in the error envelope before any upstream is paid
for a customer with a budget, readiness answers 503, and the server refuses to start; once the
cause is gone (the file back) service resumes. The SQLite cases use real files on disk, the
read-only PostgreSQL case a real session with `default_transaction_read_only`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

import pytest

from app import create_app, prepare_database
from config import load_config
from spend.engines import open_store
from spend.sqlite import FILE_CHECK_SECONDS, REST_WAL_BYTES
from spend.store import StoreUnavailable
from tests.helpers import AUTH, MASTER_KEY, UPSTREAM, assert_openai_error, chat_body, openai_reply, write_config
from tests.servers import refused_start, server_env


@pytest.fixture
def sqlite_app(tmp_path, upstream, stores):
    """An app on a SQLite file (whatever the suite's engine), and that file's path."""
    path = tmp_path / "tollgate.db"
    environ = {"LITELLM_MASTER_KEY": MASTER_KEY, "DATABASE_URL": f"sqlite:///{path}"}
    app = create_app(load_config(str(write_config(tmp_path)), environ), http=upstream.transport())
    stores.append(app.extensions["tollgate"].store)
    return app, path


def _chat(client, user):
    return client.post("/chat/completions", json=chat_body(user), headers=AUTH)


def _with_budget(client, user="capped"):
    response = client.post("/customer/new", json={"user_id": user, "max_budget": 10}, headers=AUTH)
    assert response.status_code == 200, response.get_json()


def _one_call_served(app, upstream):
    """A client of `app` whose customer `capped` (with a budget) had one call served; the upstream
    answers one more."""
    client = app.test_client()
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    _with_budget(client)
    assert _chat(client, "capped").status_code == 200
    return client


def test_a_sqlite_file_moved_away_refuses_calls_before_the_upstream_and_resumes_when_it_is_back(sqlite_app, upstream):
    app, path = sqlite_app
    client = _one_call_served(app, upstream)
    assert client.get("/health/readiness").status_code == 200

    os.rename(path, f"{path}.moved")
    time.sleep(FILE_CHECK_SECONDS * 1.2)  # the calls' path looks at the file once a second
    assert_openai_error(_chat(client, "capped"), 503, "service_unavailable")
    assert_openai_error(_chat(client, "no-budget"), 503, "service_unavailable")
    assert len(upstream.calls) == 1  # refused at admission, with or without a budget: nothing was paid upstream
    assert_openai_error(client.get("/health/readiness"), 503, "service_unavailable")
    assert not path.exists()  # nothing re-created an empty database at the path

    os.rename(f"{path}.moved", path)
    assert client.get("/health/readiness").status_code == 200
    assert _chat(client, "capped").status_code == 200
    info = client.get("/customer/info", query_string={"end_user_id": "capped"}, headers=AUTH).get_json()
    assert info["spend"] == 0.12  # both served calls charged, the refused one not


def test_a_deleted_sqlite_file_is_noticed_by_every_thread_and_never_recreated(sqlite_app):
    app, path = sqlite_app
    client = app.test_client()
    _with_budget(client)
    store = app.extensions["tollgate"].store
    os.remove(path)
    assert_openai_error(client.get("/health/readiness"), 503, "service_unavailable")
    with pytest.raises(StoreUnavailable, match="was deleted while Tollgate had it open"):
        store.engine.check_writable()

    failures = []

    def write_from_a_new_thread():  # a thread whose first connection opens after the deletion
        try:
            store.engine.write(lambda tx: tx.execute("SELECT 1").fetchone())
        except StoreUnavailable as exc:
            failures.append(exc)

    time.sleep(FILE_CHECK_SECONDS * 1.2)
    thread = threading.Thread(target=write_from_a_new_thread)
    thread.start()
    thread.join(10)
    assert len(failures) == 1
    response = client.post("/customer/new", json={"user_id": "late"}, headers=AUTH)
    assert_openai_error(response, 503, "service_unavailable")
    assert not path.exists()


def test_a_sqlite_file_replaced_by_another_refuses_writes_and_readiness(sqlite_app, tmp_path):
    app, path = sqlite_app
    client = app.test_client()
    _with_budget(client)
    shutil.copyfile(path, tmp_path / "copy.db")
    os.replace(tmp_path / "copy.db", path)

    assert_openai_error(client.get("/health/readiness"), 503, "service_unavailable")
    with pytest.raises(StoreUnavailable, match="was replaced by another file"):
        app.extensions["tollgate"].store.engine.check_writable()
    time.sleep(FILE_CHECK_SECONDS * 1.2)
    response = client.post("/customer/new", json={"user_id": "late"}, headers=AUTH)
    assert_openai_error(response, 503, "service_unavailable")


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB filesystem of its own (tmpfs), to fill up; skipped where mounting is not allowed."""
    where = tmp_path / "disk"
    where.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"cannot mount a small filesystem here (tests run as root): {exc}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=True)


def test_a_full_disk_refuses_calls_before_the_upstream_and_resumes_when_space_is_freed(small_disk, upstream, stores):
    path = small_disk / "tollgate.db"
    environ = {"LITELLM_MASTER_KEY": MASTER_KEY, "DATABASE_URL": f"sqlite:///{path}"}
    app = create_app(load_config(str(write_config(small_disk)), environ), http=upstream.transport())
    stores.append(app.extensions["tollgate"].store)
    client = app.test_client()
    upstream.post(f"{UPSTREAM}/chat/completions", json=openai_reply())
    _with_budget(client)

    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as out:  # every byte the filesystem has left
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError:
            pass
    assert_openai_error(client.get("/health/readiness"), 503, "service_unavailable")
    assert_openai_error(_chat(client, "capped"), 503, "service_unavailable")
    assert_openai_error(_chat(client, "no-budget"), 503, "service_unavailable")
    assert len(upstream.calls) == 0

    filler.unlink()
    assert client.get("/health/readiness").status_code == 200
    assert _chat(client, "capped").status_code == 200


@pytest.fixture
def immutable(tmp_path):
    """`immutable(path)`: make a file read-only even for root (`chattr +i`), undone at the end."""
    made = []

    def make(path):
        try:
            subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            pytest.fail(f"cannot make a file immutable here (chattr +i, as root: {exc})")
        made.append(path)

    yield make
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def _migrated_sqlite(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'tollgate.db'}"
    store = open_store(url)
    store.engine.migrate()
    store.engine.close()
    return url


def test_a_read_only_sqlite_database_is_refused_at_start(tmp_path, immutable, stores):
    url = _migrated_sqlite(tmp_path)
    immutable(tmp_path / "tollgate.db")
    store = open_store(url)
    stores.append(store)
    assert store.engine.ping() is False
    with pytest.raises(StoreUnavailable, match="read-only"):
        prepare_database(store, "start", print)


def test_a_server_on_a_read_only_sqlite_database_stops_with_one_line(tmp_path, immutable):
    url = _migrated_sqlite(tmp_path)
    immutable(tmp_path / "tollgate.db")
    lines, stderr = refused_start(server_env(write_config(tmp_path), url))
    assert len(lines) == 1, stderr
    assert lines[0].startswith("tollgate: SQLite database ") and "read-only" in lines[0]


def test_a_sqlite_database_made_read_only_while_serving_refuses_calls_and_resumes(sqlite_app, upstream, immutable):
    app, path = sqlite_app
    client = _one_call_served(app, upstream)
    # The database and its WAL become unwritable; the shared-memory index stays as it is (it is
    # mapped into memory, and no filesystem turns read-only under a mapping being written).
    files = [file for file in (path, path.with_name(f"{path.name}-wal")) if file.exists()]
    for file in files:
        immutable(file)

    assert_openai_error(_chat(client, "capped"), 503, "service_unavailable")
    assert len(upstream.calls) == 1  # refused at admission: nothing was paid upstream
    assert_openai_error(client.get("/health/readiness"), 503, "service_unavailable")

    for file in files:
        subprocess.run(["chattr", "-i", str(file)], check=True, capture_output=True)
    assert client.get("/health/readiness").status_code == 200
    assert _chat(client, "capped").status_code == 200
    info = client.get("/customer/info", query_string={"end_user_id": "capped"}, headers=AUTH).get_json()
    assert info["spend"] == 0.12  # both served calls charged, the refused one not


def _read_only(url: str) -> str:
    """The same PostgreSQL database and schema, in sessions whose transactions are read-only."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    query["options"] = [" ".join([*query.get("options", []), "-cdefault_transaction_read_only=on"])]
    return urlunsplit(parts._replace(query=urlencode(query, doseq=True, quote_via=quote)))


def test_a_read_only_postgres_database_is_refused_at_start_and_by_readiness(postgres_server, tmp_path, stores):
    url = postgres_server.fresh_schema_url()
    migrated = open_store(url)
    stores.append(migrated)
    migrated.engine.migrate()
    store = open_store(_read_only(url))
    stores.append(store)

    assert store.engine.ping() is False
    with pytest.raises(StoreUnavailable, match="read-only"):
        prepare_database(store, "start", print)
    with pytest.raises(StoreUnavailable, match="read-only"):
        store.engine.write(lambda tx: tx.execute("UPDATE customers SET user_id = user_id WHERE false"))
    environ = {"LITELLM_MASTER_KEY": MASTER_KEY, "DATABASE_URL": _read_only(url)}
    with pytest.raises(StoreUnavailable):
        create_app(load_config(str(write_config(tmp_path)), environ))


def filler_store(tmp_path, stores):
    """A migrated SQLite store with a `filler` table of 4 KiB blobs to grow its WAL with."""
    store = open_store(f"sqlite:///{tmp_path / 'tollgate.db'}")
    stores.append(store)
    store.engine.migrate()
    with store.engine.transaction() as tx:
        tx.execute("CREATE TABLE filler (data BLOB)")
    return store


def fill(store, rows: int) -> None:
    numbers = f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})"
    store.engine.write(lambda tx: tx.execute(f"{numbers} INSERT INTO filler SELECT randomblob(4096) FROM n"))


def wait_until_at_most(wal, size: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and wal.stat().st_size > size:
        time.sleep(0.05)


def test_the_wal_is_cut_back_at_rest_after_a_burst(tmp_path, stores):
    store = filler_store(tmp_path, stores)
    wal = tmp_path / "tollgate.db-wal"
    fill(store, 3000)
    assert wal.stat().st_size > 3 * REST_WAL_BYTES  # the burst grew it

    store.engine.start_background()
    try:
        wait_until_at_most(wal, REST_WAL_BYTES)
    finally:
        store.engine.stop_background()
    assert wal.stat().st_size <= REST_WAL_BYTES
    assert store.engine.read(lambda tx: tx.execute("SELECT count(*) FROM filler").fetchone()) == (3000,)


def test_the_wal_is_not_truncated_while_writes_flow(tmp_path, stores, monkeypatch):
    """Truncating takes the writers' turn and an fsync: the calls behind it wait. While writes
    flow, the WAL is left to SQLite (started over in place); it is cut back once at rest."""
    store = filler_store(tmp_path, stores)
    truncated, truncate = [], store.engine.truncate_idle_wal
    monkeypatch.setattr(store.engine, "truncate_idle_wal", lambda *found: truncated.append(truncate(*found)))
    wal = tmp_path / "tollgate.db-wal"
    store.engine.start_background()
    try:
        largest, until = 0, time.monotonic() + 1.5
        while time.monotonic() < until:  # about 400 KiB every 10 ms
            fill(store, 100)
            largest = max(largest, wal.stat().st_size)
            time.sleep(0.01)
        assert largest > REST_WAL_BYTES
        assert True not in truncated
        wait_until_at_most(wal, REST_WAL_BYTES)
    finally:
        store.engine.stop_background()
    assert wal.stat().st_size <= REST_WAL_BYTES
    assert True in truncated
