"""HTTP to the upstreams and to the webhook receiver, on urllib3 (requests' own transport).

Every relayed call and every webhook event goes through `Upstreams.post`.

- Connections: a `urllib3.PoolManager` per worker process, made by the process's first call
  (so nothing opened before gunicorn forks is used after it), keeping up to POOL_SIZE idle
  connections per upstream host. A kept-open connection the upstream closed while idle is
  noticed before reuse (urllib3 checks each one it hands out) and replaced. One request at a
  time per connection: no pipelining.
- No retries here (`retries=False`): a request that went out may have been taken up by the
  upstream even when no answer came back, so a POST is never sent twice behind the caller's
  back; Tollgate's router tries the next deployment (`num_retries`). No redirects either.
- TLS with the system's trusted certificates and host-name checks (`ssl.create_default_context`).
- A proxy from the environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, read once
  at start by `urllib.request.getproxies`; `proxy_bypass` per host) through a
  `urllib3.ProxyManager`: HTTPS goes through a `CONNECT` tunnel, plain HTTP is sent to the
  proxy with the absolute URL; credentials in the proxy URL go as `Proxy-Authorization: Basic`.
- Timeouts: `connect_timeout` for the connection, `timeout` for each wait for bytes, and
  `timeout` again as the call's total deadline (`providers/deadline.py`), which nothing the
  upstream does can stretch: it covers the whole exchange of an answer read at once, and a
  streamed answer up to its status and header fields (a stream may then go on for minutes while
  pieces keep coming; one that stalls hits the read timeout).
- Errors: `TransportTimeout` past a timeout or the deadline, `TransportError` for anything
  else that broke; their messages name the kind of failure only, never a URL or a header.
- `resolve` (tests and diagnostics, like curl's `--connect-to`) maps the URL's scheme, host and
  port of a direct connection to the ones actually connected to; the request keeps its `Host`.
"""

from __future__ import annotations

import base64
import http.client
import os
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, ReadTimeoutError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from providers.deadline import Watch, pool_classes, tls_context

CONNECT_TIMEOUT = 10.0
USER_AGENT = "Tollgate"
READ_SIZE = 65536
# Idle connections kept per upstream host and worker: at least a worker's threads
# (gunicorn.conf.py), so the connections of a burst of calls are kept, not discarded.
POOL_SIZE = 1024
POOLS = 64  # upstream hosts whose connections a worker keeps

Address = tuple[str, str, int]  # scheme, host, port
Resolve = Callable[[str, str, int], Address]

# What breaking off looks like from urllib3 and below it.
BROKEN = (HTTPError, OSError, http.client.HTTPException)


class TransportError(Exception):
    """The upstream could not be reached, or the exchange broke before an answer was read."""


class TransportTimeout(TransportError):
    """Connecting or waiting for the answer took longer than the call's timeout."""


class Response:
    """An upstream's answer: status, headers, and the body read at once or streamed."""

    def __init__(self, raw: urllib3.BaseHTTPResponse, timeout: float, streamed: bool):
        self.status_code = raw.status
        self.headers = raw.headers
        self._raw, self._timeout, self._streamed = raw, timeout, streamed
        self._content: bytes | None = None

    @property
    def content(self) -> bytes:
        """The whole body (of a streamed answer: read on first use, given up once the timeout has
        passed)."""
        if self._content is None:
            self._content = self._read_all() if self._streamed else self._raw.data
        return self._content

    def iter_content(self) -> Iterator[bytes]:
        """The body as it arrives; each wait for a piece is bounded by the timeout. The connection
        goes back to the pool when the body was read to its end."""
        with self._reading():
            while piece := self._raw.read1(READ_SIZE):
                yield piece

    def close(self) -> None:
        """Done with the answer: a connection with a body left unread is closed, not reused."""
        self._raw.close()
        self._raw.release_conn()

    def _read_all(self) -> bytes:
        deadline, pieces = time.monotonic() + self._timeout, []
        with self._reading():
            while piece := self._raw.read1(READ_SIZE):
                pieces.append(piece)
                if time.monotonic() > deadline:
                    raise TransportTimeout(f"the answer took more than {self._timeout:g}s")
        return b"".join(pieces)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except TransportTimeout:
            self.close()
            raise
        except ReadTimeoutError:
            self.close()
            raise TransportTimeout("timed out reading the answer") from None
        except BROKEN as exc:
            self.close()
            raise TransportError(f"the answer broke off ({_reason(exc)})") from None


class Upstreams:
    """The upstream connections of this process, made in each process by its first call."""

    def __init__(self, resolve: Resolve | None = None):
        self._resolve = resolve
        self._proxies = urllib.request.getproxies()
        self._process: _Process | None = None
        self._starting = threading.Lock()

    def post(
        self,
        url: str,
        body: bytes,
        headers: dict,
        timeout: float,
        stream: bool = False,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> Response:
        """POST `body` to `url`; the response with its body read, or left to stream with `stream`.

        `connect_timeout` (at most `timeout`) bounds the connection, `timeout` each wait for the
        answer and, in total, the call up to the whole answer (up to its header fields with
        `stream`). Raises TransportTimeout or TransportError; any HTTP status is returned as is;
        ValueError for a header field that could split the request.
        """
        parts = urlsplit(url)
        headers = {"Host": parts.netloc.rpartition("@")[2], "User-Agent": USER_AGENT, **headers}
        _check_fields(headers)
        process = self._here()
        attempt = process.watch.begin(timeout)
        try:
            try:
                pool, target = self._pool(process, parts)
                raw = pool.urlopen(
                    "POST",
                    target,
                    body=body,
                    headers=headers,
                    retries=False,
                    redirect=False,
                    assert_same_host=False,
                    timeout=urllib3.Timeout(connect=min(connect_timeout, timeout), read=timeout),
                    preload_content=not stream,
                )
            finally:
                process.watch.end(attempt)
        except Exception as exc:
            if attempt.expired or (isinstance(exc, Urllib3Timeout) and not isinstance(exc, NewConnectionError)):
                raise TransportTimeout(f"no answer within {timeout:g}s") from None
            if isinstance(exc, BROKEN):
                raise TransportError(_reason(exc)) from None
            raise
        if attempt.cut:  # what was read before the deadline may look like a whole answer: it is not
            raw.close()
            raw.release_conn()
            raise TransportTimeout(f"no answer within {timeout:g}s")
        return Response(raw, timeout, stream)

    def _here(self) -> _Process:
        """This process's pools and deadline thread (a forked worker makes its own)."""
        process = self._process
        if process is None or process.pid != os.getpid():
            with self._starting:
                process = self._process
                if process is None or process.pid != os.getpid():
                    process = self._process = _Process()
        return process

    def _pool(self, process: _Process, parts) -> tuple[urllib3.HTTPConnectionPool, str]:
        """The pool a POST to the URL of `parts` goes through, and the request target to send."""
        https = parts.scheme == "https"
        host, port = parts.hostname or "", parts.port or (443 if https else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        proxy = self._proxy(parts.scheme, host)
        if proxy is not None:
            pool = process.proxied(proxy).connection_from_host(host, port, parts.scheme)
            # A plain-HTTP proxy takes the absolute URL; a tunnel, the path.
            return pool, target if https else f"http://{parts.netloc.rpartition('@')[2]}{target}"
        scheme = parts.scheme
        if self._resolve is not None:
            scheme, host, port = self._resolve(scheme, host, port)
        return process.direct.connection_from_host(host, port, scheme), target

    def _proxy(self, scheme: str, host: str) -> str | None:
        if not self._proxies:
            return None
        proxy = self._proxies.get(scheme) or self._proxies.get("all")
        if proxy is None or urllib.request.proxy_bypass(host):
            return None
        return proxy if "://" in proxy else f"http://{proxy}"


class _Process:
    """One process's connection pools (direct and per proxy) and its deadline thread."""

    def __init__(self):
        self.pid = os.getpid()
        self.watch = Watch()
        self._classes = pool_classes(self.watch)
        self._tls = tls_context(self.watch)
        self.direct = self._manager(urllib3.PoolManager)
        self._proxied: dict[str, urllib3.ProxyManager] = {}
        self._lock = threading.Lock()

    def proxied(self, proxy: str) -> urllib3.ProxyManager:
        with self._lock:
            if proxy not in self._proxied:
                parts = urlsplit(proxy)
                address = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
                self._proxied[proxy] = self._manager(
                    urllib3.ProxyManager, address, proxy_headers=_proxy_auth(proxy), proxy_ssl_context=self._tls
                )
            return self._proxied[proxy]

    def _manager(self, kind, *args, **kwargs):
        manager = kind(*args, num_pools=POOLS, maxsize=POOL_SIZE, block=False, ssl_context=self._tls, **kwargs)
        manager.pool_classes_by_scheme = self._classes
        return manager


def _reason(exc: BaseException) -> str:
    """What went wrong, as the name of the deepest error (`ConnectionRefusedError`,
    `RemoteDisconnected`, `SSLCertVerificationError`): never a URL, a host or a header."""
    for _ in range(8):
        inner = exc.__cause__ or next((arg for arg in exc.args if isinstance(arg, BaseException)), None)
        if inner is None:
            break
        exc = inner
    return type(exc).__name__


# A header field as sent: a token, then a value without CR, LF or NUL (stricter than http.client,
# which lets a folded CR LF + space through, and whose error would quote the value).
_FIELD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+: [^\r\n\x00]*")


def _check_fields(headers: dict) -> None:
    """ValueError for a header name or value that could split the request (the value unquoted)."""
    if not all(_FIELD.fullmatch(f"{name}: {value}") for name, value in headers.items()):
        raise ValueError("invalid header field")


def _proxy_auth(proxy: str) -> dict:
    parts = urlsplit(proxy)
    if parts.username is None:
        return {}
    credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return {"Proxy-Authorization": "Basic " + base64.b64encode(credentials).decode()}
