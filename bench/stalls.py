"""Stalled uploads for the chaos bench (`bench/chaos.py`): clients that begin a request and stop.

Half of them send half of a request's headers and nothing more (the server's header deadline,
`REQUEST_HEADER_TIMEOUT`, applies); the other half send the whole headers of a chat completion
with a `Content-Length` body and only part of that body (`REQUEST_BODY_TIMEOUT` applies). They
are all held open together, each until the server answers or closes it, or `hold` seconds pass.
"""

from __future__ import annotations

import json
import resource
import selectors
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from bench.common import MASTER_KEY, MODEL

CONNECT_TIMEOUT = 10.0
OPENERS = 32  # threads that connect and send the first bytes
FDS_SPARE = 1024  # descriptors kept for everything else the bench opens


def raise_fd_limit(stalls: int) -> None:
    """Let this process hold `stalls` sockets besides its own clients: raise the soft RLIMIT_NOFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = stalls + FDS_SPARE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard)
        )


def beginning(number: int) -> bytes:
    """What stalled client `number` sends before it stops: even numbers half the headers, odd ones
    the headers and half the body."""
    body = json.dumps({"model": MODEL, "user": "stalled", "messages": [{"role": "user", "content": "x" * 1000}]})
    lines = [
        "POST /chat/completions HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {MASTER_KEY}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    whole = ("\r\n".join(lines) + "\r\n\r\n").encode()
    if number % 2 == 0:
        return whole[: len(whole) // 2]
    return whole + body[: len(body) // 2].encode()


def open_one(port: int, number: int) -> socket.socket | str:
    """A connected socket that has sent its beginning, or why there is none."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        return f"connect failed ({type(exc).__name__})"
    try:
        sock.sendall(beginning(number))
    except OSError as exc:
        sock.close()
        return f"send failed ({type(exc).__name__})"
    sock.setblocking(False)
    return sock


def hold(port: int, count: int, seconds: float) -> tuple[Counter, list[tuple[str, float]]]:
    """Open `count` stalled uploads, wait until each is answered or closed (at most `seconds` after
    they were all opened): the outcomes counted by the kind of stall ("headers: 408", "body: closed
    without an answer", "body: still open after 90 s" …), and (kind, monotonic time) of each that
    was closed without an answer."""
    with ThreadPoolExecutor(OPENERS) as pool:
        opened = list(pool.map(lambda number: open_one(port, number), range(count)))
    outcomes: Counter = Counter()
    unanswered: list[tuple[str, float]] = []
    selector = selectors.DefaultSelector()
    for number, sock in enumerate(opened):
        kind = "headers" if number % 2 == 0 else "body"
        if isinstance(sock, str):
            outcomes[f"{kind}: {sock}"] += 1
        else:
            selector.register(sock, selectors.EVENT_READ, [kind, b""])
    deadline = time.monotonic() + seconds
    try:
        while selector.get_map() and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(min(left, 1.0)):
                read(selector, key, outcomes, unanswered)
    finally:
        for key in list(selector.get_map().values()):
            outcomes[f"{key.data[0]}: still open after {seconds:g} s"] += 1
            selector.unregister(key.fileobj)
            key.fileobj.close()
        selector.close()
    return outcomes, unanswered


def read(selector: selectors.BaseSelector, key: selectors.SelectorKey, outcomes: Counter, unanswered: list) -> None:
    """Read what one stalled socket received; once the server closed it, count its outcome."""
    kind, received = key.data
    try:
        chunk = key.fileobj.recv(65536)
    except BlockingIOError:
        return
    except OSError:
        chunk = b""  # reset: the server closed it
    if chunk:
        key.data[1] = received + chunk
        return
    if received.startswith(b"HTTP/"):
        status = received.split(b" ", 2)[1].decode()
    else:
        status = "closed without an answer"
        unanswered.append((kind, time.monotonic()))
    outcomes[f"{kind}: {status}"] += 1
    selector.unregister(key.fileobj)
    key.fileobj.close()
