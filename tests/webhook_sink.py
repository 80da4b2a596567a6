"""A local webhook receiver for tests: records every POST, can fail on purpose or go down.

with WebhookSink(fail_first=3) as sink:
    sink.url                    # http://127.0.0.1:<port>/hook
    sink.wait_for(200)          # bounded wait until 200 events were accepted
    sink.accepted               # the JSON bodies answered 2xx, in arrival order
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookSink:
    def __init__(self, fail_first: int = 0, port: int = 0):
        self.fail_first = fail_first
        self.port = port
        self.posts: list[tuple[dict, bytes, int]] = []  # (headers, body, status answered)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def accepted(self) -> list[dict]:
        with self._lock:
            return [json.loads(body) for _, body, status in self.posts if status == 200]

    def accepted_with_headers(self) -> list[tuple[dict, bytes]]:
        with self._lock:
            return [(headers, body) for headers, body, status in self.posts if status == 200]

    def __enter__(self) -> WebhookSink:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Listen (again) on the same port."""
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep connections open, as webhook receivers do

            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with sink._lock:
                    status = 500 if sink.fail_first > 0 else 200
                    sink.fail_first -= status == 500
                    sink.posts.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        """Stop listening: posts are refused until `start()`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, count: int, timeout: float = 30.0) -> list[dict]:
        """The accepted events once there are at least `count` (bounded by `timeout`)."""
        deadline = time.monotonic() + timeout
        while len(self.accepted) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.accepted


class PipelineReceiver:
    """A raw-socket webhook receiver that shows how posts arrive and can mishandle pipelining.

    It parses each read for the complete requests in it and records, per connection, how many
    came in one read before it answered (more than one: they were pipelined). `how`:
    - "keep-alive": answers each request in order, `statuses` picks a status by request number;
    - "http/1.0": answers the first request of a connection as HTTP/1.0 and closes it;
    - "close-after-N": answers N requests, the Nth with `Connection: close`, then closes;
    - "one-per-read": answers the first request of each read and drops the rest of the read,
      as servers that do not handle pipelining do (the connection stays open).
    `delay` is how long it takes over each answer.
    """

    def __init__(self, how: str = "keep-alive", statuses: dict[int, int] | None = None, delay: float = 0.0):
        self.how, self.statuses, self.delay = how, statuses or {}, delay
        self.answered: list[tuple[bytes, int]] = []  # (body, status), in answer order
        self.per_read: list[int] = []  # complete requests found in each read
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/hook"

    @property
    def accepted(self) -> list[dict]:
        with self._lock:
            return [json.loads(body) for body, status in self.answered if 200 <= status < 300]

    def close(self) -> None:
        self._listener.close()
        for connection in list(self._open):
            connection.close()

    def __enter__(self) -> PipelineReceiver:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            self._open.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        buffer, served = b"", 0
        with connection:
            while True:
                try:
                    piece = connection.recv(65536)
                except OSError:
                    return
                if not piece:
                    return
                buffer += piece
                requests = []
                while (end := buffer.find(b"\r\n\r\n")) >= 0:
                    head = buffer[:end].decode("latin-1").lower()
                    length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
                    if len(buffer) < end + 4 + length:
                        break
                    requests.append(buffer[end + 4 : end + 4 + length])
                    buffer = buffer[end + 4 + length :]
                if not requests:
                    continue
                with self._lock:
                    self.per_read.append(len(requests))
                if self.how == "one-per-read":
                    requests, buffer = requests[:1], b""
                for body in requests:
                    served += 1
                    if self.how == "http/1.0":
                        self._answer(connection, body, 200, b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
                        return
                    if self.how.startswith("close-after-") and served == int(self.how.rsplit("-", 1)[1]):
                        self._answer(connection, body, 200, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                        return
                    with self._lock:
                        status = self.statuses.get(len(self.answered), 200)
                    self._answer(connection, body, status, b"HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n" % status)

    def _answer(self, connection: socket.socket, body: bytes, status: int, answer: bytes) -> None:
        time.sleep(self.delay)
        with self._lock:
            self.answered.append((body, status))
        connection.sendall(answer)
