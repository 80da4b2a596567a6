"""Start Tollgate the way production does: the Procfile's `web:` command, real gunicorn workers.

Used by the tests that need real processes and by the benchmark harness. Everything binds or
connects on 127.0.0.1 only, and every process started here is stopped by its process id.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent


def procfile_command() -> list[str]:
    """The argv of the Procfile's `web:` line."""
    for line in (REPO / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return shlex.split(line[len("web:") :])
    raise RuntimeError("Procfile has no web: line")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def tollgate_server(env: dict[str, str], *, workers: int = 2, start_timeout: float = 30.0) -> Iterator[Server]:
    """Run the Procfile command with `env` added; yield once it answers; stop it by pid."""
    port = free_port()
    full_env = {**os.environ, "PORT": str(port), "WEB_CONCURRENCY": str(workers), **env}
    log_file = tempfile.NamedTemporaryFile(prefix="tollgate-", suffix=".log", delete=False)
    process = subprocess.Popen(
        procfile_command(),
        cwd=REPO,
        env=full_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(f"http://127.0.0.1:{port}", process, Path(log_file.name))
    try:
        _wait_until_serving(server, start_timeout)
        yield server
    finally:
        stop(process)
        log_file.close()
        server.log_path.unlink(missing_ok=True)


def _wait_until_serving(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"tollgate exited with {server.process.returncode}:\n{server.log()}")
        try:
            if requests.get(f"{server.url}/health/readiness", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"tollgate did not start within {timeout}s:\n{server.log()}")


def stop(process: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the process group we started, then SIGKILL what is left after `grace` seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
    except ProcessLookupError:
        pass
