"""The upstream transport (`providers/http.py`): kept-open connections, proxies, timeouts."""

from __future__ import annotations

import socket
import socketserver
import threading
import time

import pytest

from providers.http import TransportError, TransportTimeout, Upstreams
from tests.local_upstream import LocalUpstream

PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")
URL = "http://upstream.example/v1/chat/completions"


@pytest.fixture
def no_proxy_env(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


@pytest.fixture
def upstream():
    server = LocalUpstream()
    yield server
    server.stop()


def client_ports(upstream: LocalUpstream) -> set:
    return {call.request.peer for call in upstream.calls}


def test_calls_from_one_thread_share_one_kept_open_connection(no_proxy_env, upstream):
    for _ in range(3):
        upstream.post(URL, json={"ok": True})
    http = upstream.transport()
    answers = [http.post(URL, b"{}", {}, timeout=5).content for _ in range(3)]
    assert answers == [b'{"ok": true}'] * 3
    assert len(client_ports(upstream)) == 1


def test_each_thread_has_its_own_connections(no_proxy_env, upstream):
    upstream.post(URL, json={"ok": True})
    http = upstream.transport()
    threads = [threading.Thread(target=lambda: http.post(URL, b"{}", {}, timeout=5)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(upstream.calls) == 3 and len(client_ports(upstream)) == 3


def test_a_connection_the_upstream_closed_while_idle_is_replaced(no_proxy_env, upstream):
    upstream.idle_timeout = 0.05  # the server hangs up on connections idle this long
    upstream.post(URL, json={"ok": True})
    http = upstream.transport()
    assert http.post(URL, b"{}", {}, timeout=5).status_code == 200
    time.sleep(0.3)
    assert http.post(URL, b"{}", {}, timeout=5).status_code == 200
    assert len(client_ports(upstream)) == 2


def test_a_streamed_answer_left_unread_does_not_leave_its_connection_for_reuse(no_proxy_env, upstream):
    upstream.post(URL, body=b"data: 1\n\n" * 1000, content_type="text/event-stream")
    http = upstream.transport()
    response = http.post(URL, b"{}", {}, timeout=5, stream=True)
    next(response.iter_content())
    response.close()
    assert http.post(URL, b"{}", {}, timeout=5).content.startswith(b"data: 1")
    assert len(client_ports(upstream)) == 2


def test_an_answer_slower_than_the_timeout_raises_a_timeout(no_proxy_env):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1/chat/completions"
        with pytest.raises(TransportTimeout):
            Upstreams().post(url, b"{}", {}, timeout=0.2)


def test_an_unreachable_upstream_raises_a_transport_error(no_proxy_env):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(TransportError):
        Upstreams().post(f"http://127.0.0.1:{port}/v1/x", b"{}", {}, timeout=2)


def test_plain_http_goes_to_the_proxy_with_the_absolute_url_and_its_credentials(no_proxy_env, upstream):
    no_proxy_env.setenv("HTTP_PROXY", f"http://user:s%40cret@127.0.0.1:{upstream.port('http')}")
    upstream.post(URL, json={"ok": True})
    assert Upstreams().post(URL, b"{}", {}, timeout=5).status_code == 200
    sent = upstream.calls[0].request
    assert sent.target == URL
    assert sent.headers["Host"] == "upstream.example"
    assert sent.headers["Proxy-Authorization"] == "Basic dXNlcjpzQGNyZXQ="  # user:s@cret


def test_hosts_in_no_proxy_are_reached_directly(no_proxy_env, upstream):
    no_proxy_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    no_proxy_env.setenv("NO_PROXY", "upstream.example")
    upstream.post(URL, json={"ok": True})
    assert upstream.transport().post(URL, b"{}", {}, timeout=5).status_code == 200
    assert upstream.calls[0].request.target == "/v1/chat/completions"


class ConnectProxy(socketserver.ThreadingTCPServer):
    """Records the CONNECT request of a tunnel, answers 200, then hangs up."""

    daemon_threads = True

    def __init__(self):
        self.requests: list[bytes] = []
        super().__init__(("127.0.0.1", 0), self.Handler)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            head = b""
            while b"\r\n\r\n" not in head:
                piece = self.request.recv(4096)
                if not piece:
                    return
                head += piece
            self.server.requests.append(head)
            self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")


def test_https_goes_through_a_connect_tunnel(no_proxy_env):
    proxy = ConnectProxy()
    threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    try:
        no_proxy_env.setenv("HTTPS_PROXY", f"http://tunnel:pw@127.0.0.1:{proxy.server_address[1]}")
        with pytest.raises(TransportError):  # the fake proxy hangs up instead of carrying TLS
            Upstreams().post("https://api.openai.com/v1/chat/completions", b"{}", {}, timeout=5)
    finally:
        proxy.shutdown()
        proxy.server_close()
    [head] = proxy.requests
    assert head.startswith(b"CONNECT api.openai.com:443 HTTP/1.")
    assert b"Proxy-Authorization: Basic dHVubmVsOnB3\r\n" in head  # tunnel:pw


def raw_answer(answer: bytes, requests: int = 1) -> str:
    """A one-shot server on 127.0.0.1; its URL. It reads `requests` requests with `{}` bodies
    (several must come without waiting for answers), writes `answer` as is, and keeps the
    connection open until the client closes it."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        connection, _ = listener.accept()
        with connection, listener:
            data = b""
            while data.count(b"\r\n\r\n{}") < requests:
                data += connection.recv(65536)
            connection.sendall(answer)
            while connection.recv(65536):
                pass

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/v1/x"


def test_header_fields_are_read_after_a_100_continue_with_folded_lines_joined(no_proxy_env):
    url = raw_answer(
        b"HTTP/1.1 100 Continue\r\nX-Early: 1\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nX-Request-Id: abc\r\nX-Folded: first\r\n\tsecond\r\nContent-Length: 2\r\n\r\nok"
    )
    response = Upstreams().post(url, b"{}", {}, timeout=5)
    assert (response.status_code, response.content) == (200, b"ok")
    assert response.headers["x-request-id"] == "abc"
    assert response.headers["X-Folded"] == "first second"
    assert response.headers.get("x-early") is None


def test_a_chunked_answer_is_read_to_its_end(no_proxy_env):
    url = raw_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert Upstreams().post(url, b"{}", {}, timeout=5).content == b"abcde"


def test_an_answer_with_too_many_header_fields_is_refused(no_proxy_env):
    fields = b"".join(b"X-%d: 1\r\n" % number for number in range(101))
    url = raw_answer(b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 0\r\n\r\n")
    with pytest.raises(TransportError):
        Upstreams().post(url, b"{}", {}, timeout=5)


@pytest.mark.parametrize(
    "headers",
    [{"X-Note": "a\r\nX-Injected: 1"}, {"X-Note": "a\nb"}, {"Bad Name": "x"}, {"X-Nul": "a\x00"}],
)
def test_a_header_field_that_could_split_the_request_is_refused_before_sending(no_proxy_env, upstream, headers):
    upstream.post(URL, json={"ok": True})
    http = upstream.transport()
    with pytest.raises(ValueError):
        http.post(URL, b"{}", headers, timeout=5)
    assert upstream.calls == []
    assert http.post(URL, b'{"n": 1}', {"X-Note": "fine: a value, with colons"}, timeout=5).status_code == 200
    [call] = upstream.calls
    assert call.request.headers["X-Note"] == "fine: a value, with colons" and call.request.body == b'{"n": 1}'
