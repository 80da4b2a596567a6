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
from contextlib import ExitStack, contextmanager
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


def server_env(config: Path, database_url: str, **settings: str) -> dict[str, str]:
    """The environment of a test server: its config file, its own database (from the
    `database_url` fixture, so it runs on the suite's engine), the master key, and `settings`."""
    from tests.helpers import MASTER_KEY

    return {"CONFIG_FILE_PATH": str(config), "DATABASE_URL": database_url, "LITELLM_MASTER_KEY": MASTER_KEY, **settings}


def refused_start(env: dict[str, str]) -> tuple[list[str], str]:
    """Run the Procfile command with `env` (and this PATH, a free PORT) where it must not start: its
    non-empty stderr lines, and the whole stderr; AssertionError if it exited 0."""
    full_env = {"PATH": os.environ["PATH"], "PORT": str(free_port()), **env}
    done = subprocess.run(procfile_command(), cwd=REPO, env=full_env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0, done.stderr
    return [line for line in done.stderr.splitlines() if line.strip()], done.stderr


@contextmanager
def tollgate_server(env: dict[str, str], *, workers: int = 2, start_timeout: float = 30.0) -> Iterator[Server]:
    """Run the Procfile command with `env` added; yield once it answers; stop it by pid."""
    with tollgate_servers([env], workers=workers, start_timeout=start_timeout) as [server]:
        yield server


@contextmanager
def tollgate_servers(
    envs: list[dict[str, str]], *, workers: int = 2, start_timeout: float = 30.0
) -> Iterator[list[Server]]:
    """Several instances at once (one per env), started together as boxes of one deployment
    start; yield once every one answers; each is stopped by its pid."""
    with ExitStack() as stack:
        servers = [stack.enter_context(_launched(env, workers)) for env in envs]
        stack.callback(stop_all, [server.process for server in servers])  # runs first: stops them together
        for server in servers:
            wait_until_serving(server, start_timeout)
        yield servers


@contextmanager
def _launched(env: dict[str, str], workers: int) -> Iterator[Server]:
    """The Procfile command started with `env`, stopped by its pid (and its log removed) on exit."""
    if not env.get("DATABASE_URL"):
        # Without it the server would use tollgate.db in the repository.
        raise ValueError("a test server needs its own DATABASE_URL (the database_url fixture)")
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
        yield server
    finally:
        stop(process)
        log_file.close()
        server.log_path.unlink(missing_ok=True)


def wait_until_serving(server: Server, timeout: float) -> None:
    """Poll `/health/readiness` every 50 ms until it answers 200; RuntimeError with the log if the
    server exits or `timeout` passes."""
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
    """Stop one server we started: see `stop_all`."""
    stop_all([process], grace)


def stop_all(processes: list[subprocess.Popen], grace: float = 15.0) -> None:
    """SIGTERM the gunicorn masters we started, all at once (each stops its own workers
    gracefully), then SIGKILL the process group of any still running after `grace` seconds.

    Only the master is signalled: a worker signalled directly can exit before the master takes
    its own SIGTERM, the master then forks a replacement, and a replacement signalled before it
    has installed its handlers (during `post_fork`) ignores the signal until the graceful timeout.
    """
    running = [process for process in processes if process.poll() is None]
    for process in running:
        try:
            os.kill(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(5)
