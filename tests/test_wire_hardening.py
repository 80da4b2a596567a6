"""What a client can do to the server before the app sees a request, through real gunicorn workers:
stalled headers and bodies (408), bodies over the limit however framed (413), broken framing (400),
gunicorn's own refusals (400/414/431) in the OpenAI envelope, and header values read as UTF-8."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from spend.engines import open_store
from tests.fake_upstream import FakeUpstream
from tests.helpers import AUTH, MASTER_KEY, sql_rows
from tests.test_gunicorn import gpt_test_env

CALL = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
LIMIT = 1024 * 1024  # max_request_size_mb: 1 in these servers' config


@pytest.fixture(scope="module", params=["gevent", "gthread"])
def server(request, tmp_path_factory, module_database_url):
    """A server of one worker of each model (TOLLGATE_WORKER), gthread's with four threads."""
    from tests.servers import tollgate_server

    tmp_path = tmp_path_factory.mktemp("wire")
    with FakeUpstream() as upstream:
        env = gpt_test_env(tmp_path, module_database_url(), upstream.url)
        config = tmp_path / "config.yaml"
        config.write_text(config.read_text() + "\ngeneral_settings:\n  max_request_size_mb: 1\n")
        env.update(
            CONFIG_FILE_PATH=str(config),
            REQUEST_HEADER_TIMEOUT="1",
            REQUEST_BODY_TIMEOUT="1",
            GUNICORN_THREADS="4",
            TOLLGATE_WORKER=request.param,
        )
        with tollgate_server(env, workers=1) as running:
            running.database_url = env["DATABASE_URL"]
            yield running


def port(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def exchange(server, *parts: bytes, pause: float = 0.0, timeout: float = 20.0) -> tuple[int, dict, bytes]:
    """Send `parts` on one connection (`pause` seconds apart), read until the server closes it:
    (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port(server)), timeout=timeout) as sock:
        for part in parts:
            sock.sendall(part)
            time.sleep(pause)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def assert_envelope(status: int, headers: dict, body: bytes, expected: int, kind: str = "invalid_request_error"):
    assert status == expected, body
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["type"] == kind and error["code"] == str(expected) and error["message"]
    assert "<html" not in body.decode("utf-8", "replace").lower()
    return error


def request_head(path: str = "/chat/completions", **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {MASTER_KEY}"]
    lines += ["Content-Type: application/json", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunked(body: bytes, size: int = 65536) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def call_body(padding: int) -> bytes:
    return json.dumps({**CALL, "metadata": {"padding": "a" * padding}}).encode()


def healthy(server) -> None:
    response = requests.post(f"{server.url}/chat/completions", json=CALL, headers=AUTH, timeout=20)
    assert response.status_code == 200, response.text


def test_a_chunked_body_over_the_limit_is_refused_with_413(server):
    status, headers, body = exchange(
        server, request_head(**{"Transfer-Encoding": "chunked"}), chunked(call_body(LIMIT))
    )
    assert_envelope(status, headers, body, 413)
    healthy(server)


def test_a_chunked_body_within_the_limit_is_served(server):
    status, _, body = exchange(server, request_head(**{"Transfer-Encoding": "chunked"}), chunked(call_body(LIMIT // 2)))
    assert status == 200, body
    assert json.loads(body)["object"] == "chat.completion"


def test_a_declared_length_over_the_limit_is_refused_with_413(server):
    head = request_head(**{"Content-Length": str(LIMIT + 1)})
    status, headers, body = exchange(server, head, call_body(LIMIT)[: LIMIT + 1])
    assert_envelope(status, headers, body, 413)


def test_a_bad_chunk_size_is_a_400_and_leaves_nothing_behind(server):
    before = requests.get(f"{server.url}/spend/logs", headers=AUTH, timeout=10).json()
    status, headers, body = exchange(server, request_head(**{"Transfer-Encoding": "chunked"}), b"zz\r\n{}\r\n0\r\n\r\n")
    error = assert_envelope(status, headers, body, 400)
    assert "framing" in error["message"]
    assert requests.get(f"{server.url}/spend/logs", headers=AUTH, timeout=10).json() == before
    assert "Traceback" not in server.log()
    healthy(server)


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /health/liveliness HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET /health/liveliness HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n", 400),
    ],
    ids=["request-line", "uri-too-long", "header-too-large", "header-name"],
)
def test_gunicorns_own_refusals_are_in_the_openai_envelope(server, raw, expected):
    status, headers, body = exchange(server, raw)
    assert_envelope(status, headers, body, expected)
    assert headers["connection"] == "close"


def test_stalled_headers_get_408_and_free_their_thread(server):
    # Eight half-sent requests against a worker of four threads: each is answered 408 when its
    # header deadline passes, and a real call is served all the same.
    half = b"POST /chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty"
    with ThreadPoolExecutor(max_workers=8) as pool:
        stalled = [pool.submit(exchange, server, half, pause=5.0) for _ in range(8)]
        time.sleep(0.3)
        healthy(server)
        answers = [future.result() for future in stalled]
    for status, headers, body in answers:
        error = assert_envelope(status, headers, body, 408, "request_timeout")
        assert "headers" in error["message"]
    healthy(server)


def test_a_stalled_body_gets_408_and_charges_nothing(server):
    before = requests.get(f"{server.url}/spend/logs", headers=AUTH, timeout=10).json()
    body = call_body(100)
    head = request_head(user="slow-uploader", **{"Content-Length": str(len(body))})
    status, headers, answer = exchange(server, head, body[:20], pause=3.0)
    error = assert_envelope(status, headers, answer, 408, "request_timeout")
    assert "body" in error["message"]
    assert requests.get(f"{server.url}/spend/logs", headers=AUTH, timeout=10).json() == before
    healthy(server)


def test_a_stalled_body_on_a_kept_alive_connection_gets_408_and_the_connection_closes(server):
    body = call_body(100)
    head = request_head(**{"Content-Length": str(len(body))}).replace(b"Connection: close\r\n", b"")
    status, headers, answer = exchange(server, head, body[:20], timeout=20.0)  # reads until the server closes
    assert_envelope(status, headers, answer, 408, "request_timeout")
    healthy(server)


@pytest.mark.parametrize(
    "header_bytes, customer",
    [("客户-Ω".encode(), "客户-Ω"), ("café".encode("latin-1"), "café")],
    ids=["utf-8", "latin-1"],
)
def test_a_customer_id_in_a_header_is_the_same_customer_as_in_the_body(server, stores, header_bytes, customer):
    payload = json.dumps(CALL).encode()
    head = request_head(**{"Content-Length": str(len(payload))})
    head = head[:-2] + b"x-litellm-customer-id: " + header_bytes + b"\r\n\r\n"
    status, _, answer = exchange(server, head, payload)
    assert status == 200, answer
    healthy_body = {**CALL, "user": customer}
    assert requests.post(f"{server.url}/chat/completions", json=healthy_body, headers=AUTH, timeout=20).ok
    store = open_store(server.database_url)
    stores.append(store)
    rows = sql_rows(
        store,
        "SELECT customer_id, COUNT(*) FROM spend_logs WHERE customer_id = ? AND status = 'success' "
        "GROUP BY customer_id",
        (customer,),
    )
    assert rows == [(customer, 2)]
