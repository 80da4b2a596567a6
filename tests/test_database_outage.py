"""A PostgreSQL database that goes away and comes back, and one that is not there at start.

The database is reached through a real TCP relay on 127.0.0.1 that the test can cut: while it is
cut, calls answer 503 in the error envelope (nothing is served or charged) and readiness says
503; once it is back, service resumes without a restart.
"""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from app import create_app
from config import load_config
from tests.helpers import AUTH, MASTER_KEY, PRICED, assert_openai_error, chat_body, write_config
from tests.servers import free_port, refused_start, server_env

MODELS = [{"model_name": "mock-model", "litellm_params": {"model": "mock/mock-model", **PRICED}}]


class Relay:
    """Forwards 127.0.0.1:<port> to a target address, until `cut()`; `restore()` forwards again."""

    def __init__(self, target: tuple[str, int]):
        self.target, self.up = target, True
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            server = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """Drop every open connection and refuse new ones, as a database that went away."""
        self.up = False
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def through(url: str, port: int) -> str:
    parts = urlsplit(url)
    user = parts.netloc.rsplit("@", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{port}"))


@pytest.fixture
def relayed(postgres_server):
    url = postgres_server.fresh_schema_url()
    parts = urlsplit(url)
    relay = Relay((parts.hostname, parts.port or 5432))
    yield relay, through(url, relay.port)
    relay.close()


def test_calls_answer_503_while_the_database_is_away_and_resume_when_it_is_back(relayed, tmp_path, upstream):
    relay, url = relayed
    config = load_config(str(write_config(tmp_path, MODELS)), {"LITELLM_MASTER_KEY": MASTER_KEY, "DATABASE_URL": url})
    app = create_app(config, http=upstream.transport())
    store = app.extensions["tollgate"].store
    client = app.test_client()
    try:
        assert client.post("/chat/completions", json=chat_body("steady", "mock-model"), headers=AUTH).status_code == 200
        assert client.get("/health/readiness").status_code == 200

        relay.cut()
        response = client.post("/chat/completions", json=chat_body("steady", "mock-model"), headers=AUTH)
        assert_openai_error(response, 503, "service_unavailable")
        assert response.headers["retry-after"] == "1"
        assert_openai_error(client.get("/health/readiness"), 503, "service_unavailable")

        relay.restore()
        deadline, status = time.monotonic() + 20, None
        while time.monotonic() < deadline and status != 200:
            status = client.post("/chat/completions", json=chat_body("steady", "mock-model"), headers=AUTH).status_code
        assert status == 200
        assert client.get("/health/readiness").status_code == 200
        info = client.get("/customer/info", query_string={"end_user_id": "steady"}, headers=AUTH).get_json()
        charged = [row for row in store.ledger.spend_logs("steady") if row.status == "success"]
        assert len(charged) >= 2
        assert round(info["spend"] * 10**12) == sum(row.cost_units for row in charged)
    finally:
        store.engine.close()


def test_a_server_whose_database_cannot_be_reached_stops_with_one_line(tmp_path):
    config = write_config(tmp_path, MODELS)
    port = free_port()  # nothing listens there
    lines, stderr = refused_start(server_env(config, f"postgresql://tollgate:s3cret-pw@127.0.0.1:{port}/ledger"))
    assert len(lines) == 1, stderr
    assert lines[0].startswith("tollgate: PostgreSQL database 'ledger' on 127.0.0.1:") and str(port) in lines[0]
    assert "Traceback" not in stderr and "s3cret-pw" not in stderr


def test_a_call_waits_for_a_busy_pool_instead_of_being_refused(postgres_server, monkeypatch, stores):
    """Every pooled connection lent out while the database answers (a burst): a call waits its
    turn past POOL_TIMEOUT_SECONDS instead of answering 503."""
    import spend.postgres
    from spend.engines import open_store

    monkeypatch.setattr(spend.postgres, "POOL_TIMEOUT_SECONDS", 0.2)
    monkeypatch.setenv("DATABASE_POOL_SIZE", "1")
    store = open_store(postgres_server.fresh_schema_url())
    stores.append(store)
    store.engine.migrate()
    held, release = threading.Event(), threading.Event()

    def hold(tx):
        held.set()
        release.wait(10)

    holder = threading.Thread(target=lambda: store.engine.read(hold))
    holder.start()
    assert held.wait(10)
    threading.Timer(1.0, release.set).start()  # five pool timeouts later
    assert store.engine.read(lambda tx: tx.execute("SELECT 7").fetchone()[0]) == 7  # not StoreUnavailable
    holder.join(10)
