"""Gunicorn settings for Tollgate; the Procfile's `web:` line loads this file.

Worker model: gthread. An LLM call holds its request for seconds to minutes while the upstream
thinks, and a sync worker would serve one such call per process. gthread gives each worker a
pool of OS threads: a waiting call costs one idle thread (the GIL is released while it waits on
the socket and while SQLite works), so 2 workers x 512 threads hold 1,024 calls in flight on a
2-core box (memory per call held: docs/performance.md). Threads are started as calls need
them, so an idle worker stays small. The worker's main loop reports to
the arbiter every second whatever its threads are doing, so `timeout` never kills a long call.
gevent would hold more connections per worker, but it would stall every call in a worker
whenever SQLite waits for its write lock.

The app is preloaded: config errors, a database that cannot be reached and migrations left to
the release phase stop the master with one line before it binds the port or starts a worker;
pending migrations are applied (each step printed, with progress on long ones) before it binds.
Workers share the loaded code and pricing data copy-on-write. No database connection is open at
fork time: connections (SQLite's per thread, PostgreSQL's pool per worker) open after it.

Environment: PORT (default 4000), WEB_CONCURRENCY (workers, default 2), GUNICORN_THREADS
(threads per worker, default 512).
"""

import os
import sys

from app import MigrationsPending, prepare_database
from config import ConfigError, load_config
from spend.engines import open_store
from spend.store import StoreUnavailable


def _say(line: str) -> None:
    sys.stderr.write(f"tollgate: {line}\n")


try:
    _config = load_config()
    _store = open_store(_config.database_url)
    try:
        prepare_database(_store, _config.migrations, report=_say)
    finally:
        _store.engine.close()
except (ConfigError, StoreUnavailable, MigrationsPending) as exc:
    _say(str(exc))
    sys.exit(1)

bind = f"0.0.0.0:{os.environ.get('PORT', '4000')}"
# Two workers on two cores: more workers than cores added a little throughput and much more to
# the p99, and memory each (docs/performance.md).
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "512"))
# Accept little more than the threads can serve, so a burst spreads over the workers instead of
# queueing inside one; the margin holds idle keep-alive connections.
worker_connections = threads + 64
preload_app = True
timeout = 60
graceful_timeout = 120
keepalive = 75
# gunicorn's runtime control socket is one fixed path per user; Tollgate does not use it, and
# several instances on one box (blue/green deploys, the test suite) would fight over it.
control_socket_disable = True


def post_fork(server, worker):
    """Each worker runs its own background threads (WAL checkpoints, webhook delivery); threads never cross a fork."""
    from app import start_background_work

    start_background_work(worker.app.wsgi())


def worker_exit(server, worker):
    """Stop them: the delivery thread finishes the event in hand; the rest stays in the outbox."""
    from app import stop_background_work

    stop_background_work(worker.app.wsgi())
