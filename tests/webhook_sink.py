"""A local webhook receiver for tests: records every POST, can fail on purpose, answer slowly or go down.

with WebhookSink(fail_first=3, delay=0.1) as sink:
    sink.url                    # http://127.0.0.1:<port>/hook
    sink.wait_for(200)          # bounded wait until 200 events were accepted
    sink.accepted               # the JSON bodies answered 2xx, in arrival order
    sink.posts                  # every post: (headers, body, status answered), in arrival order
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookSink:
    def __init__(self, fail_first: int = 0, port: int = 0, delay: float = 0.0):
        self.fail_first = fail_first
        self.port = port
        self.delay = delay  # seconds it takes over each answer, as a slow receiver
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
                time.sleep(sink.delay)
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
