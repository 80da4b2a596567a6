"""Gunicorn settings for Tollgate; the Procfile's `web:` line loads this file.

Worker model: gevent, chosen by measurement (docs/performance.md, "10,000 calls held at once").
An LLM call holds its request for seconds to minutes while the upstream thinks. Under gevent each
call is a greenlet of a few KiB: 2 workers hold 10,000 calls at once, all answered, where 2 x 512
threads answered three in four and the rest of the connections overflowed the listen queue, and
2 x 6,000 threads lost their time in lock convoys under the GIL. The app stays synchronous Flask
code: gevent's monkey-patching, done at the top of this file before the app is loaded (so its
locks, thread-locals and sockets are gevent's from the start), makes sockets, locks, sleeps and
psycopg's waits cooperative. SQLite's statements run on the worker's one OS thread; they take
microseconds, and a worker waits in `flock` while the other commits (2% of a worker's time at
10,000 calls). A slow client costs a greenlet, not a thread: request headers are due within
REQUEST_HEADER_TIMEOUT seconds of their first byte (408 after that), the body within
REQUEST_BODY_TIMEOUT (workers.py, routes/__init__.py). TOLLGATE_WORKER=gthread runs OS threads
instead (GUNICORN_THREADS per worker, 512 by default), with the same deadlines.

The app is preloaded: config errors, a database that cannot be reached and migrations left to
the release phase stop the master with one line before it binds the port or starts a worker;
pending migrations are applied (each step printed, with progress on long ones) before it binds.
Workers share the loaded code and pricing data copy-on-write. No database connection is open at
fork time: connections (SQLite's pool and PostgreSQL's, per worker) open after it.

Reload: `kill -HUP <master>` makes gunicorn read this file again and start new workers. Tollgate
then reads config.yaml again (`on_reload`) and the new workers serve it; the old ones finish their
calls and stop. A config with problems is logged with every problem, and the new workers serve
the config that was running: a bad edit never takes the server down.

Stop: SIGTERM to the master drains every worker (lifecycle.py): new requests get 503 at once,
readiness says so, and the calls in flight finish and are charged before the worker exits, within
`graceful_timeout`.

Metrics: every worker writes its metric values to files in one directory, PROMETHEUS_MULTIPROC_DIR
(a new temporary one unless set), which /metrics adds up; a worker that exits leaves its counts
there (`child_exit`). See metrics.py and docs/metrics.md.

Environment: PORT (default 4000), WEB_CONCURRENCY (workers, default 2), TOLLGATE_WORKER (gevent
or gthread), WORKER_CONNECTIONS (gevent: calls per worker, default 10,000), GUNICORN_THREADS
(gthread: threads per worker, default 512), GUNICORN_BACKLOG (default 4096),
PROMETHEUS_MULTIPROC_DIR.
"""

import atexit
import gc
import os
import shutil
import sys
import tempfile

# gunicorn reads this file at start and again on every `kill -HUP`, in the master. Only at start
# may a bad config stop the process; the first reading imports `app`, so finding it imported
# means this reading is a reload.
RELOADING = "app" in sys.modules
# The worker model: gevent by default (below); TOLLGATE_WORKER=gthread for OS threads.
WORKER_MODEL = os.environ.get("TOLLGATE_WORKER", "gevent").strip().lower()
if WORKER_MODEL not in ("gevent", "gthread"):
    sys.stderr.write(f"tollgate: TOLLGATE_WORKER must be gevent or gthread, got {WORKER_MODEL!r}\n")
    sys.exit(1)
if WORKER_MODEL == "gevent":
    # Before anything else is imported: the app is loaded here, in the master, and its locks,
    # thread-locals and sockets must be gevent's from the start (patching again in the worker,
    # as gunicorn does, changes nothing more).
    from gevent import monkey

    monkey.patch_all()


def _metrics_directory() -> None:
    """Where the workers keep their metric values (prometheus_client's multiprocess mode; metrics.py),
    set before anything imports prometheus_client: the operator's PROMETHEUS_MULTIPROC_DIR (made when
    missing), else a new temporary directory, removed when the master exits. Emptied at start, since
    files left by an earlier run would be added to this run's sums; a reload keeps it, and the
    replaced workers' counts stay."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        path = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tollgate-metrics-")
        atexit.register(_remove_directory, path, os.getpid())
        return
    try:
        os.makedirs(path, exist_ok=True)
        for entry in os.scandir(path):
            if entry.name.endswith(".db") and entry.is_file():
                os.remove(entry.path)
        if not os.access(path, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        sys.stderr.write(f"tollgate: PROMETHEUS_MULTIPROC_DIR {path}: {exc.strerror}\n")
        sys.exit(1)


def _remove_directory(path: str, master_pid: int) -> None:
    if os.getpid() == master_pid:  # workers inherit the exit handler; they leave the directory alone
        shutil.rmtree(path, ignore_errors=True)


if not RELOADING:
    _metrics_directory()

from app import MigrationsPending, prepare_database  # noqa: E402
from config import ConfigError, load_config  # noqa: E402
from logs import gunicorn_logconfig  # noqa: E402
from spend.engines import open_store  # noqa: E402
from spend.store import StoreUnavailable  # noqa: E402

DRAIN_MARGIN_SECONDS = 5.0  # a draining worker stops this long before the master's graceful_timeout


def _say(line: str) -> None:
    sys.stderr.write(f"tollgate: {line}\n")


def _check_at_start() -> None:
    """The config valid and the database ready, or one line and exit status 1."""
    try:
        config = load_config()
        store = open_store(config.database_url)
        try:
            prepare_database(store, config.migrations, report=_say)
        finally:
            store.engine.close()
    except (ConfigError, StoreUnavailable, MigrationsPending) as exc:
        _say(str(exc))
        sys.exit(1)


def _check_on_reload() -> str | None:
    """The config's problems (None when it loads): on a reload they are reported, never fatal."""
    try:
        load_config()
    except ConfigError as exc:
        return str(exc)
    except Exception as exc:  # anything raised here would stop the master
        return f"{type(exc).__name__} while reading the config"
    return None


_reload_problem = _check_on_reload() if RELOADING else _check_at_start()

bind = f"0.0.0.0:{os.environ.get('PORT', '4000')}"
# Two workers on two cores: more workers than cores added a little throughput and much more to
# the p99, and memory each (docs/performance.md).
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "512"))
if WORKER_MODEL == "gevent":
    from workers import gevent_worker  # noqa: E402

    worker_class = gevent_worker()
    worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "10000"))
else:
    # gthread with a deadline on request headers and gunicorn's refusals in the OpenAI envelope (workers.py).
    worker_class = "workers.Worker"
    # Accept little more than the threads can serve, so a burst spreads over the workers instead of
    # queueing inside one; the margin holds idle keep-alive connections.
    worker_connections = threads + 64
# Connections the kernel queues for the workers to accept (Linux caps it at net.core.somaxconn).
backlog = int(os.environ.get("GUNICORN_BACKLOG", "4096"))
preload_app = True
# A worker holding thousands of calls makes objects fast: collecting the youngest generation every
# 700 of them (Python's default) ran full collections of 150-300 ms in a burst of 10,000 calls,
# stopping every call the worker held (docs/performance.md).
GC_THRESHOLDS = (50_000, 20, 20)
timeout = 60
graceful_timeout = 120
keepalive = 75
# gunicorn's runtime control socket is one fixed path per user; Tollgate does not use it, and
# several instances on one box (blue/green deploys, the test suite) would fight over it.
control_socket_disable = True
# gunicorn's own lines (workers booting, exiting, timing out) in Tollgate's LOG_FORMAT and LITELLM_LOG level.
logconfig_dict = gunicorn_logconfig(os.environ.get("LOG_FORMAT", "text"), os.environ.get("LITELLM_LOG", "INFO"))


def pre_fork(server, worker):
    """The preloaded app, its config and the pricing data live as long as the workers: frozen out
    of the garbage collector before each fork, so no worker's collection walks them again (nor
    writes to their pages, which stay shared with the master)."""
    gc.freeze()


def post_fork(server, worker):
    """Each worker runs its own background threads (WAL checkpoints, webhook delivery); threads never cross a fork."""
    from app import start_background_work

    gc.set_threshold(*GC_THRESHOLDS)

    app = worker.app.wsgi()
    app.extensions["tollgate"].lifecycle.mark_born()
    start_background_work(app)


def post_worker_init(worker):
    """A worker drains on SIGTERM when the server stops (gunicorn's own handler is in place by now)."""
    lifecycle = worker.wsgi.extensions["tollgate"].lifecycle
    lifecycle.drain_on_sigterm(worker.handle_exit, max(worker.cfg.graceful_timeout - DRAIN_MARGIN_SECONDS, 1.0))


def on_reload(server):
    """`kill -HUP`: the workers about to be replaced are told so, then the app the new workers run is
    built from the config just read (in the master, as at start); the running app stays when it cannot be."""
    previous = server.app.callable
    if previous is not None:
        previous.extensions["tollgate"].lifecycle.replace_workers()
    # The running app was frozen out of the collector (`pre_fork`): once replaced it is garbage the
    # master must be able to collect; the next fork freezes whatever is live then.
    gc.unfreeze()
    if _reload_problem is not None:
        server.log.error("config reload refused; the workers keep serving the running config.\n%s", _reload_problem)
        return
    server.app.callable = None
    try:
        server.app.wsgi()
    except Exception as exc:  # a database that cannot be reached, migrations left to the release phase
        server.app.callable = previous
        server.log.error("config reload failed (%s); the workers keep serving the running config", exc)
        return
    server.log.info("config reloaded from %s; new workers serve it", os.environ.get("CONFIG_FILE_PATH", "config.yaml"))


def nworkers_changed(server, new_value, old_value):
    """Fewer workers (`kill -TTOU`): the ones stopped are replaced, not drained."""
    if old_value is not None and new_value < old_value and server.app.callable is not None:
        server.app.callable.extensions["tollgate"].lifecycle.replace_workers()


def worker_exit(server, worker):
    """Stop them: the delivery thread finishes the event in hand; the rest stays in the outbox."""
    from app import stop_background_work

    stop_background_work(worker.app.wsgi())


def child_exit(server, worker):
    """A worker is gone (stopped, replaced or killed): prometheus_client's bookkeeping for a dead
    process (its counters stay in the sums /metrics reports), and the budget reservations of the
    calls it held are given back."""
    from prometheus_client import multiprocess

    from app import release_dead_worker

    multiprocess.mark_process_dead(worker.pid)
    if server.app.callable is not None:
        release_dead_worker(server.app.callable, worker.pid)
