"""HTTP to the upstreams: `http.client` over connections kept open per thread.

Every relayed call and every webhook event goes through `Upstreams.post`. A thread keeps the
connections it opened (one idle connection per host is reused; the others are closed when
returned), so nothing opened before gunicorn forks is used after it and no lock is taken on the
hot path. `http.client` rather than `requests`: a relayed call costs well under
half the CPU (`bench/` has the figures), and Tollgate needs none of what `requests` adds on top
(cookies, redirects, auth helpers).

- TLS with the system's trusted certificates and host-name checks (`ssl.create_default_context`).
- A proxy from the environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, read once
  at start): HTTPS goes through a `CONNECT` tunnel, plain HTTP is sent to the proxy with the
  absolute URL; credentials in the proxy URL are sent as `Proxy-Authorization: Basic`.
- A kept-open connection the upstream closed meanwhile is noticed before reuse; if the upstream
  drops one just as a request is sent on it, the request is sent once more on a new connection
  (nothing was answered, so nothing was served).
- `resolve` (tests and diagnostics, like curl's `--connect-to`) maps the URL's scheme, host and
  port to the ones actually connected to; the request keeps the URL's `Host`.
"""

from __future__ import annotations

import base64
import http.client
import re
import select
import socket
import ssl
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit

CONNECT_TIMEOUT = 10.0
USER_AGENT = "Tollgate"
READ_SIZE = 65536
MAX_HEADER_LINE = 65536  # http.client's own limits
MAX_HEADERS = 100

Address = tuple[str, str, int]  # scheme, host, port
Resolve = Callable[[str, str, int], Address]


class TransportError(Exception):
    """The upstream could not be reached, or the exchange broke before an answer was read."""


class TransportTimeout(TransportError):
    """Connecting or waiting for the answer took longer than the call's timeout."""


class Response:
    """An upstream's answer: status, headers, and the body read at once or streamed."""

    def __init__(self, raw: http.client.HTTPResponse, done: Callable[[bool], None]):
        self.status_code = raw.status
        self.headers = raw.headers
        self._raw, self._done = raw, done
        self._content: bytes | None = None
        self._finished = False

    @property
    def content(self) -> bytes:
        """The whole body (read on first use)."""
        if self._content is None:
            with self._reading():
                self._content = self._raw.read()
            self._finish(reusable=True)
        return self._content

    def iter_content(self) -> Iterator[bytes]:
        """The body as it arrives; the connection is kept for reuse only when it was read to the end."""
        with self._reading():
            while piece := self._raw.read1(READ_SIZE):
                yield piece
        self._finish(reusable=True)

    def close(self) -> None:
        self._finish(reusable=False)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except TimeoutError:
            self.close()
            raise TransportTimeout("timed out reading the answer") from None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise TransportError(f"the answer broke off ({type(exc).__name__})") from None

    def _finish(self, reusable: bool) -> None:
        if not self._finished:
            self._finished = True
            self._done(reusable and not self._raw.will_close)


class _Answer(http.client.HTTPResponse):
    """`http.client`'s response, but its header block is split into fields here rather than by
    the `email` package, which cost half of the CPU of reading an answer. The rest of `begin`
    follows the standard library's (Python 3.11), which reads the body as usual.
    """

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            _read_fields(self.fp)  # the headers of a 100 Continue
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = _read_fields(self.fp)
        encoding = self.headers.get("transfer-encoding")
        self.chunked = bool(encoding) and encoding.lower() == "chunked"
        self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            if self.length is not None and self.length < 0:
                self.length = None
        if status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) or 100 <= status < 200:
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True  # the body ends when the connection does


def _read_fields(fp) -> http.client.HTTPMessage:
    """The header fields up to the blank line, with http.client's limits; folded lines joined."""
    message = http.client.HTTPMessage()
    for name, value in _field_list(fp):
        message.set_raw(name, value)
    return message


def _field_list(fp) -> list[list[str]]:
    """[name, value] of each header field up to the blank line, with http.client's limits."""
    fields: list[list[str]] = []
    while True:
        line = fp.readline(MAX_HEADER_LINE + 1)
        if len(line) > MAX_HEADER_LINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            break
        if len(fields) >= MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text[:1] in (" ", "\t") and fields:
            fields[-1][1] += " " + text.strip()
            continue
        name, colon, value = text.partition(":")
        if colon:
            fields.append([name.strip(), value.strip()])
    return fields


# A header field as sent: a token, then a value without CR, LF or NUL (stricter than http.client,
# which lets a folded CR LF + space through).
_FIELD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+: [^\r\n\x00]*")


def _header_block(headers: dict) -> bytes:
    """The header fields as sent; ValueError for a name or value that could split the request."""
    fields = [f"{name}: {value}" for name, value in headers.items()]
    if not all(_FIELD.fullmatch(field) for field in fields):
        raise ValueError("invalid header field")
    return "\r\n".join(fields).encode("latin-1")


class _OneWrite:
    """`http.client`'s request, sent in one write.

    `http.client` sends the header block and the body in two writes (two segments, with
    TCP_NODELAY, and two wake-ups of the receiver per request) and checks each header field
    with two regular expressions as it adds it; here the block comes checked (`_header_block`,
    one expression per field) and the request line, header block and body go out in one `send`.
    `_send_output` and `_buffer` are `http.client`'s own (Python 3.11), as `_Answer.begin` is.
    """

    def post(self, target: str, body: bytes, header_block: bytes) -> None:
        self.putrequest("POST", target, skip_host=True, skip_accept_encoding=True)
        self._buffer.append(header_block)
        self.endheaders(body)

    def _send_output(self, message_body=None, encode_chunked=False):
        if not isinstance(message_body, bytes):
            return super()._send_output(message_body, encode_chunked)
        self._buffer.extend((b"", message_body))
        message = b"\r\n".join(self._buffer)
        del self._buffer[:]
        self.send(message)


class _HTTPConnection(_OneWrite, http.client.HTTPConnection):
    response_class = _Answer


class _HTTPSConnection(_OneWrite, http.client.HTTPSConnection):
    response_class = _Answer


class Upstreams:
    """The upstream connections of every thread of this process."""

    def __init__(self, resolve: Resolve | None = None):
        self._local = threading.local()
        self._resolve = resolve
        self._proxies = urllib.request.getproxies()
        self._tls: ssl.SSLContext | None = None

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

        `timeout` bounds each wait for the answer, `connect_timeout` (at most `timeout`) the
        connection. Raises TransportTimeout or TransportError; any HTTP status is returned as is.
        """
        key, proxy, target, first = self._route(url)
        header_block = _header_block({**first, **headers, "Content-Length": str(len(body))})
        for fresh in (False, True):
            connection, reused = self._checkout(key, proxy, min(connect_timeout, timeout), fresh)
            try:
                connection.sock.settimeout(timeout)
                connection.post(target, body, header_block)
                raw = connection.getresponse()
            except TimeoutError:
                connection.close()
                raise TransportTimeout(f"no answer within {timeout:g}s") from None
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                if reused and isinstance(exc, _DROPPED):
                    continue  # the upstream closed this kept-open connection as we sent: nothing was served
                raise TransportError(type(exc).__name__) from None
            response = Response(raw, self._returner(key, connection))
            if not stream:
                response.content  # noqa: B018 - read now, so the connection goes back at once
            return response
        raise AssertionError("unreachable")

    def _route(self, url: str) -> tuple[Address, str | None, str, dict]:
        """Where a POST to `url` goes: the address, the proxy if any, the request target and
        the first header fields (Host, User-Agent, the proxy's credentials for plain HTTP)."""
        parts = urlsplit(url)
        https = parts.scheme == "https"
        host, port = parts.hostname or "", parts.port or (443 if https else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        proxy = self._proxy(parts.scheme, host)
        first = {"Host": parts.netloc.rpartition("@")[2], "User-Agent": USER_AGENT}
        if proxy is not None and not https:  # a plain-HTTP proxy takes the absolute URL
            target = f"http://{first['Host']}{target}"
            first.update(_proxy_auth(proxy))
        return (parts.scheme, host, port), proxy, target, first

    def _checkout(
        self, key: Address, proxy: str | None, connect_timeout: float, fresh: bool
    ) -> tuple[http.client.HTTPConnection, bool]:
        idle: dict = self._local.__dict__.setdefault("idle", {})
        connection = idle.pop(key, None)
        if connection is not None and not fresh and not _dropped(connection):
            return connection, True
        if connection is not None:
            connection.close()
        return self._open(key, proxy, connect_timeout), False

    def _returner(self, key: Address, connection: http.client.HTTPConnection) -> Callable[[bool], None]:
        idle: dict = self._local.idle

        def done(reusable: bool) -> None:
            if reusable and key not in idle:
                idle[key] = connection
            else:
                connection.close()

        return done

    def _open(self, key: Address, proxy: str | None, connect_timeout: float) -> http.client.HTTPConnection:
        scheme, host, port = key
        if self._resolve is not None:
            scheme, host, port = self._resolve(scheme, host, port)
        try:
            if proxy is not None:
                proxy_parts = urlsplit(proxy)
                proxy_host, proxy_port = proxy_parts.hostname or "", proxy_parts.port or 80
                if scheme == "https":
                    connection = _HTTPSConnection(
                        proxy_host, proxy_port, timeout=connect_timeout, context=self._context()
                    )
                    connection.set_tunnel(host, port, headers=_proxy_auth(proxy))
                else:
                    connection = _HTTPConnection(proxy_host, proxy_port, timeout=connect_timeout)
            elif scheme == "https":
                connection = _HTTPSConnection(host, port, timeout=connect_timeout, context=self._context())
            else:
                connection = _HTTPConnection(host, port, timeout=connect_timeout)
            connection.connect()
        except TimeoutError:
            raise TransportTimeout(f"no connection within {connect_timeout:g}s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(type(exc).__name__) from None
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def _proxy(self, scheme: str, host: str) -> str | None:
        if not self._proxies:
            return None
        proxy = self._proxies.get(scheme) or self._proxies.get("all")
        if proxy is None or urllib.request.proxy_bypass(host):
            return None
        return proxy if "://" in proxy else f"http://{proxy}"


_DROPPED = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """Whether a kept-open connection was closed by the other side (readable while idle)."""
    if connection.sock is None:
        return True
    poller = select.poll()  # not select(): with a thousand streams open, descriptors pass 1024
    poller.register(connection.sock, select.POLLIN)
    return bool(poller.poll(0))


def _proxy_auth(proxy: str) -> dict:
    parts = urlsplit(proxy)
    if parts.username is None:
        return {}
    credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return {"Proxy-Authorization": "Basic " + base64.b64encode(credentials).decode()}
