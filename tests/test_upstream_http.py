"""The upstream transport (`providers/http.py`): pooled connections, proxies, TLS, timeouts and
the total deadline of a call. Real local servers throughout: the wire is what is tested here."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
import time

import pytest

from providers.http import TransportError, TransportTimeout, Upstreams
from tests.local_upstream import LocalUpstream

PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR")
URL = "http://upstream.example/v1/chat/completions"
SECRET = "sk-never-in-a-message-4242"


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


class RawServer:
    """A server on 127.0.0.1 that reads each request (head and `Content-Length` body) and hands
    the connection to `answer(connection)`, which writes whatever it likes; one thread per
    connection. `peers` are the client addresses it saw. Without `requests`, `answer` gets each
    connection as soon as it is accepted."""

    def __init__(self, answer, requests: bool = True):
        self.answer, self.requests = answer, requests
        self.peers: list[tuple[str, int]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1/x"

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, peer = self.listener.accept()
            except OSError:
                return
            self.peers.append(peer)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            if not self.requests:
                with contextlib.suppress(OSError):
                    self.answer(connection)
                return
            reader = connection.makefile("rb")
            try:
                while not self.stopped.is_set():
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        line = reader.readline()
                        if not line:
                            return
                        head += line
                    length = next((int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                                   if line.startswith(b"content-length:")), 0)  # fmt: skip
                    reader.read(length)
                    if self.answer(connection) is False:
                        return
            except OSError:
                return  # the client hung up


@pytest.fixture
def raw_server():
    servers = []

    def start(answer, requests: bool = True) -> RawServer:
        servers.append(RawServer(answer, requests))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def answer_ok(connection: socket.socket) -> None:
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def paced(*pieces: bytes, every: float, then: bytes = b""):
    """An answer that sends `pieces` one after the other, `every` seconds apart, for ever (or
    `then` once they run out), until the client hangs up."""

    def answer(connection: socket.socket) -> bool:
        index = 0
        while True:
            if index >= len(pieces) and then:
                connection.sendall(then)
                return False
            connection.sendall(pieces[min(index, len(pieces) - 1)])
            index += 1
            time.sleep(every)

    return answer


# -- connections: pooled per process, one request at a time each --------------------------------


def test_calls_in_turn_share_one_kept_open_connection(no_proxy_env, upstream):
    for _ in range(3):
        upstream.post(URL, json={"ok": True})
    http = upstream.transport()
    answers = [http.post(URL, b"{}", {}, timeout=5).content for _ in range(3)]
    assert answers == [b'{"ok": true}'] * 3
    assert len(client_ports(upstream)) == 1


def test_calls_at_the_same_time_each_have_a_connection_and_keep_it_for_later_calls(no_proxy_env, raw_server):
    together = threading.Barrier(3, timeout=5)

    def answer(connection):
        if len(server.peers) <= 3 and not together.broken:
            together.wait()  # answers only once all three requests are in: no pipelining, no queueing
        answer_ok(connection)

    server = raw_server(answer)
    http = Upstreams()
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(http.post(server.url, b"{}", {}, timeout=5).content))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    together.abort()
    assert results == [b"ok"] * 3 and len(server.peers) == 3
    for _ in range(5):
        assert http.post(server.url, b"{}", {}, timeout=5).content == b"ok"
    assert len(server.peers) == 3


def test_a_connection_the_upstream_closed_while_idle_is_replaced(no_proxy_env, upstream):
    upstream.idle_timeout = 0.05  # the server hangs up on connections idle this long
    upstream.post(URL, json={"ok": True})
    http = upstream.transport()
    assert http.post(URL, b"{}", {}, timeout=5).status_code == 200
    time.sleep(0.3)
    assert http.post(URL, b"{}", {}, timeout=5).status_code == 200
    assert len(client_ports(upstream)) == 2


def test_a_streamed_answer_left_unread_does_not_leave_its_connection_for_reuse(no_proxy_env, upstream):
    upstream.post(URL, body=b"data: 1\n\n" * 100_000, content_type="text/event-stream")
    http = upstream.transport()
    response = http.post(URL, b"{}", {}, timeout=5, stream=True)
    next(response.iter_content())
    response.close()
    assert http.post(URL, b"{}", {}, timeout=5).content.startswith(b"data: 1")
    assert len(client_ports(upstream)) == 2


def test_a_streamed_answer_read_to_its_end_leaves_its_connection_for_reuse(no_proxy_env, upstream):
    upstream.post(URL, body=b"data: 1\n\n" * 1000, content_type="text/event-stream")
    http = upstream.transport()
    response = http.post(URL, b"{}", {}, timeout=5, stream=True)
    assert b"".join(response.iter_content()) == b"data: 1\n\n" * 1000
    response.close()
    assert http.post(URL, b"{}", {}, timeout=5).content.startswith(b"data: 1")
    assert len(client_ports(upstream)) == 1


def test_a_forked_process_opens_its_own_connections(no_proxy_env, upstream):
    for _ in range(3):
        upstream.post(URL, json={"ok": True})
    http = upstream.transport()
    assert http.post(URL, b"{}", {}, timeout=5).status_code == 200
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit code only
        try:
            os._exit(0 if http.post(URL, b"{}", {}, timeout=5).status_code == 200 else 1)
        except BaseException:
            os._exit(2)
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
    assert http.post(URL, b"{}", {}, timeout=5).status_code == 200  # the parent's connection still works
    first, in_child, last = (call.request.peer for call in upstream.calls)
    assert first == last != in_child


# -- timeouts and the total deadline ------------------------------------------------------------


def test_an_answer_slower_than_the_timeout_raises_a_timeout(no_proxy_env):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1/chat/completions"
        with pytest.raises(TransportTimeout):
            Upstreams().post(url, b"{}", {}, timeout=0.2)


UNENDING = {
    "100 Continue every 200 ms": paced(b"HTTP/1.1 100 Continue\r\n\r\n", every=0.2),
    "header fields without end": paced(
        b"HTTP/1.1 200 OK\r\n", *[b"X-More: %d\r\n" % n for n in range(99)], every=0.1, then=b"\r\n"
    ),
    "a status line a byte at a time": paced(*[bytes([byte]) for byte in b"HTTP/1.1 200 OK\r\n"], every=0.1),
}
TRICKLED_BODY = paced(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", *[b"x"] * 100, every=0.1)


@pytest.mark.parametrize("stream", [False, True], ids=["read at once", "streamed"])
@pytest.mark.parametrize("answer", UNENDING.values(), ids=UNENDING.keys())
def test_an_upstream_that_keeps_sending_cannot_hold_a_call_past_its_timeout(no_proxy_env, raw_server, answer, stream):
    server = raw_server(answer)
    started = time.monotonic()
    with pytest.raises(TransportTimeout):
        Upstreams().post(server.url, b"{}", {}, timeout=1.0, stream=stream)
    assert time.monotonic() - started < 2.0


def test_a_body_trickled_a_byte_at_a_time_cannot_hold_a_call_past_its_timeout(no_proxy_env, raw_server):
    server = raw_server(TRICKLED_BODY)
    http = Upstreams()
    started = time.monotonic()
    with pytest.raises(TransportTimeout):
        http.post(server.url, b"{}", {}, timeout=1.0)
    assert time.monotonic() - started < 2.0
    assert http.post(raw_server(answer_ok).url, b"{}", {}, timeout=1.0).content == b"ok"  # the next call is fine


def test_a_tls_handshake_trickled_a_byte_at_a_time_cannot_hold_a_call_past_its_timeout(no_proxy_env, raw_server):
    # A TLS record header announcing 16 KiB of handshake, then its bytes one by one.
    server = raw_server(paced(b"\x16\x03\x03\x40\x00", *[b"\x00"] * 1000, every=0.1), requests=False)
    started = time.monotonic()
    with pytest.raises(TransportTimeout):
        Upstreams().post(server.url.replace("http:", "https:"), b"{}", {}, timeout=1.0)
    assert time.monotonic() - started < 2.0


def test_a_proxy_that_never_finishes_its_connect_answer_cannot_hold_a_call_past_its_timeout(no_proxy_env, raw_server):
    proxy = raw_server(UNENDING["header fields without end"])
    no_proxy_env.setenv("HTTPS_PROXY", proxy.url.removesuffix("/v1/x"))
    started = time.monotonic()
    with pytest.raises(TransportTimeout):
        Upstreams().post("https://api.openai.com/v1/chat/completions", b"{}", {}, timeout=1.0)
    assert time.monotonic() - started < 2.0


def test_a_stream_may_last_longer_than_the_timeout_while_pieces_keep_coming(no_proxy_env, raw_server):
    server = raw_server(paced(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n", *[b"x"] * 15, every=0.1))
    response = Upstreams().post(server.url, b"{}", {}, timeout=0.5, stream=True)
    started = time.monotonic()
    assert b"".join(response.iter_content()) == b"x" * 15
    assert time.monotonic() - started > 1.0


def test_a_stream_that_stalls_longer_than_the_timeout_raises_a_timeout(no_proxy_env, raw_server):
    server = raw_server(paced(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\nx", b"x", every=5.0))
    response = Upstreams().post(server.url, b"{}", {}, timeout=0.3, stream=True)
    pieces = response.iter_content()
    assert next(pieces) == b"x"
    with pytest.raises(TransportTimeout):
        next(pieces)


# -- errors ------------------------------------------------------------------------------------


def test_an_unreachable_upstream_raises_a_transport_error(no_proxy_env):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(TransportError) as raised:
        Upstreams().post(f"http://127.0.0.1:{port}/v1/x", b"{}", {}, timeout=2)
    assert not isinstance(raised.value, TransportTimeout)
    assert str(raised.value) == "ConnectionRefusedError"


BROKEN = {
    "hangs up": lambda connection: False,
    "cuts the body": lambda connection: connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nok") or False,
    "never answers": lambda connection: time.sleep(2) or False,
    "answers nonsense": lambda connection: connection.sendall(b"SPDY/9 what\r\n\r\n") or False,
}


@pytest.mark.parametrize("answer", BROKEN.values(), ids=BROKEN.keys())
def test_transport_errors_never_quote_the_url_or_a_header(no_proxy_env, raw_server, answer):
    server = raw_server(answer)
    with pytest.raises(TransportError) as raised:
        Upstreams().post(f"{server.url}?key={SECRET}", b"{}", {"Authorization": f"Bearer {SECRET}"}, timeout=0.5)
    assert SECRET not in str(raised.value) and "127.0.0.1" not in str(raised.value)


def test_a_header_with_a_secret_that_could_split_the_request_is_refused_without_quoting_it(no_proxy_env):
    with pytest.raises(ValueError) as raised:
        Upstreams().post("http://127.0.0.1:9/v1/x", b"{}", {"Authorization": f"Bearer {SECRET}\r\nX: 1"}, timeout=1)
    assert SECRET not in str(raised.value)


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


# -- what the upstream may answer ----------------------------------------------------------------


def test_header_fields_are_read_after_a_100_continue(no_proxy_env, raw_server):
    server = raw_server(paced(b"HTTP/1.1 100 Continue\r\nX-Early: 1\r\n\r\n", every=0.0,
                              then=b"HTTP/1.1 200 OK\r\nX-Request-Id: abc\r\nContent-Length: 2\r\n\r\nok"))  # fmt: skip
    response = Upstreams().post(server.url, b"{}", {}, timeout=5)
    assert (response.status_code, response.content) == (200, b"ok")
    assert response.headers["x-request-id"] == "abc"
    assert response.headers.get("x-early") is None


def test_a_chunked_answer_is_read_to_its_end(no_proxy_env, raw_server):
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    server = raw_server(lambda connection: connection.sendall(answer))
    assert Upstreams().post(server.url, b"{}", {}, timeout=5).content == b"abcde"


def test_an_answer_with_too_many_header_fields_is_refused(no_proxy_env, raw_server):
    fields = b"".join(b"X-%d: 1\r\n" % number for number in range(101))
    server = raw_server(lambda connection: connection.sendall(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n"))
    with pytest.raises(TransportError):
        Upstreams().post(server.url, b"{}", {}, timeout=5)


def test_an_error_status_is_returned_as_is_and_a_redirect_is_not_followed(no_proxy_env, raw_server):
    server = raw_server(lambda connection: connection.sendall(
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:9/\r\nContent-Length: 0\r\n\r\n"))  # fmt: skip
    assert Upstreams().post(server.url, b"{}", {}, timeout=5).status_code == 307


# -- TLS ---------------------------------------------------------------------------------------


def read_request(sock) -> bytes:
    """One request off `sock`: its header block, then as many body bytes as Content-Length says."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            return data
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    while len(body) < length and (piece := sock.recv(65536)):
        body += piece
    return head + b"\r\n\r\n" + body


@pytest.fixture
def tls_server(tmp_path):
    """An HTTPS server on 127.0.0.1 with a self-signed certificate for `localhost`; its
    certificate file and port."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command makes the test certificate: install Debian's openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost", "-addext",
         "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(connection, server_side=True) as tls:
                    read_request(tls)  # all of it: closing with bytes unread would reset the connection
                    answer_ok(tls)
            except (OSError, ssl.SSLError):
                pass  # the client refused the certificate

    threading.Thread(target=serve, daemon=True).start()
    yield cert, listener.getsockname()[1]
    listener.close()


def test_tls_refuses_a_certificate_the_system_does_not_trust(no_proxy_env, tls_server):
    _, port = tls_server
    with pytest.raises(TransportError) as raised:
        Upstreams().post(f"https://localhost:{port}/v1/x", b"{}", {}, timeout=5)
    assert str(raised.value) == "SSLCertVerificationError"


def test_tls_trusts_the_system_store_and_checks_the_host_name(no_proxy_env, tls_server):
    cert, port = tls_server
    no_proxy_env.setenv("SSL_CERT_FILE", str(cert))  # OpenSSL's own way to set the trusted store
    assert Upstreams().post(f"https://localhost:{port}/v1/x", b"{}", {}, timeout=5).content == b"ok"
    with pytest.raises(TransportError) as raised:
        Upstreams().post(f"https://127.0.0.1:{port}/v1/x", b"{}", {}, timeout=5)  # not the certificate's name
    assert str(raised.value) == "SSLCertVerificationError"


# -- proxies from the environment ----------------------------------------------------------------


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
