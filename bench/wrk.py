"""Drive one load point with wrk (Debian package `wrk`) and `bench/post.lua`; parse what it reports.

`post.lua` sends JSON chat completions with a bearer key and a cycling `user`, counts non-2xx
answers by status, and its `done()` hook prints one `BENCH key=value …` line, read here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT = Path(__file__).with_name("post.lua")
PACED_SCRIPT = Path(__file__).with_name("paced.lua")
WRK_PATH = "/usr/bin/wrk"
INSTALL_HINT = "apt-get install -y wrk"
REQUEST_TIMEOUT = "30s"  # wrk's per-call timeout; slower calls count as `timeout` errors
EXIT_MARGIN = 30.0  # the subprocess is killed this long after the point should have ended
SOCKET_ERRORS = ("connect", "read", "write", "timeout")


@dataclass
class Load:
    """What to send: the key, how many customers to cycle over, streaming or not, and the think
    time of each connection between an answer and its next call (0: at once, a closed loop)."""

    key: str
    users: int
    user_prefix: str
    model: str
    stream: bool
    think_ms: int = 0


@dataclass
class Result:
    """One wrk run: calls completed, its duration, latency percentiles and errors."""

    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non2xx: int
    socket_errors: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)

    def rate(self) -> float:
        """Completed calls per second (any status)."""
        return self.requests / self.seconds if self.seconds else 0.0

    def errors(self) -> int:
        """Non-2xx answers plus socket errors (connect, read, write, timeout)."""
        return self.non2xx + sum(self.socket_errors.values())

    def error_text(self) -> str:
        """`0`, or the total with its parts, e.g. `12 (502×10, timeout 2)`."""
        parts = [f"{status}×{count}" for status, count in sorted(self.statuses.items())]
        parts += [f"{kind} {count}" for kind, count in self.socket_errors.items() if count]
        return f"{self.errors()} ({', '.join(parts)})" if parts else str(self.errors())


def find_wrk() -> str | None:
    """The wrk executable, or None when it is not installed."""
    found = shutil.which("wrk")
    if found:
        return found
    return WRK_PATH if Path(WRK_PATH).is_file() else None


def find_or_say() -> str | None:
    """The wrk executable; None, after telling how to install it on stderr, when it is missing."""
    found = find_wrk()
    if found is None:
        print(f"wrk is not installed; install it with: {INSTALL_HINT}", file=sys.stderr)
    return found


def command(wrk: str, url: str, clients: int, seconds: int, load: Load) -> list[str]:
    """The wrk argv for `clients` connections on min(clients, 2) threads for `seconds`."""
    return [
        wrk,
        "-c",
        str(clients),
        "-t",
        str(min(clients, 2)),
        "-d",
        f"{seconds}s",
        "--timeout",
        REQUEST_TIMEOUT,
        "-s",
        str(PACED_SCRIPT if load.think_ms else SCRIPT),
        url,
        "--",
        load.key,
        str(load.users),
        "1" if load.stream else "0",
        load.user_prefix,
        load.model,
        str(load.think_ms),
    ]


def run(wrk: str, url: str, clients: int, seconds: int, load: Load) -> Result:
    """Run wrk against `url` (killed if it outlives the point by EXIT_MARGIN); parse its BENCH line."""
    argv = command(wrk, url, clients, seconds, load)
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + EXIT_MARGIN, check=False)
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH "):
            return parse(line)
    raise RuntimeError(f"wrk exited {completed.returncode} without a result:\n{completed.stdout}\n{completed.stderr}")


def parse(line: str) -> Result:
    """A Result from the `BENCH key=value …` line that post.lua's done() prints."""
    values = dict(item.split("=", 1) for item in line.split()[1:])
    statuses = dict(pair.split(":", 1) for pair in values["statuses"].split(",") if pair)
    return Result(
        requests=int(values["requests"]),
        seconds=int(values["duration_us"]) / 1e6,
        p50_ms=int(values["p50_us"]) / 1000,
        p90_ms=int(values["p90_us"]) / 1000,
        p99_ms=int(values["p99_us"]) / 1000,
        max_ms=int(values["max_us"]) / 1000,
        non2xx=int(values["non2xx"]),
        socket_errors={kind: int(values[kind]) for kind in SOCKET_ERRORS},
        statuses={status: int(count) for status, count in statuses.items()},
    )
