"""Gunicorn settings for Tollgate; the Procfile's `web:` line loads this file.

Worker model: gthread. An LLM call holds its request for seconds to minutes while the upstream
thinks, and a sync worker would serve one such call per process. gthread gives each worker a
pool of OS threads: a waiting call costs one idle thread (the GIL is released while it waits on
the socket and while SQLite works), so 2 workers x 512 threads hold 1,024 calls in flight on a
2-core box (1,000 streams held at once take ~350 MiB in all: docs/performance.md). Threads are
started as calls need them, so an idle worker stays small. The worker's main loop reports to
the arbiter every second whatever its threads are doing, so `timeout` never kills a long call.
gevent would hold more connections per worker, but it would stall every call in a worker
whenever SQLite waits for its write lock.

The app is preloaded: config errors stop the master before any worker starts, and workers share
the loaded code and pricing data copy-on-write. No database connection is open at fork time:
`create_app` migrates and closes, and each worker thread opens its own connection.

Environment: PORT (default 4000), WEB_CONCURRENCY (workers, default 2), GUNICORN_THREADS
(threads per worker, default 512).
"""

import os
import sys

from config import ConfigError, load_config

try:
    load_config()
except ConfigError as exc:
    sys.stderr.write(f"tollgate: {exc}\n")
    sys.exit(1)

bind = f"0.0.0.0:{os.environ.get('PORT', '4000')}"
# Two workers on two cores: a third or fourth added 8-12% of throughput at 32 clients but
# 40-100% to the p99 and ~45 MiB each (docs/performance.md, "Workers and threads").
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
