"""Tollgate: an LLM proxy that charges every call to a customer.

`create_app()` builds the Flask app; gunicorn calls it (see `Procfile` and `gunicorn.conf.py`).
Everything a request needs lives on one `Gateway` in `app.extensions["tollgate"]`; pass `config`,
`store`, `http` or `clock` to replace the defaults (the tests do).
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Callable

from flask import Flask, g

import auth
from config import Config, load_config
from errors import register_error_handlers
from gateway import Gateway
from plain_json import PlainJSONProvider
from providers import PRICING_IDS
from providers.http import Upstreams
from providers.router import Router
from routes import budgets, customers, health, llm, spend_logs, webhooks
from spend import migrations
from spend.engines import open_store
from spend.pricing import pricer_for
from spend.store import Store
from webhooks.dispatcher import Dispatcher

log = logging.getLogger("tollgate")


def create_app(
    config: Config | None = None,
    *,
    store: Store | None = None,
    http: Upstreams | None = None,
    clock: Callable[[], float] | None = None,
) -> Flask:
    """Build the app. Reads `CONFIG_FILE_PATH` (default `./config.yaml`) when no config is given."""
    configure_logging()
    config = config or load_config()
    store = store or open_store(config.database_url)
    prepare_database(store, config.migrations, report=log.info)
    # Nothing opened here may be used after gunicorn forks: workers open their own connections.
    store.engine.close()

    app = Flask("tollgate")
    app.config["MAX_CONTENT_LENGTH"] = config.settings.max_request_bytes
    app.json = PlainJSONProvider(app)
    gateway = Gateway(
        config=config,
        store=store,
        http=http or Upstreams(),
        clock=clock or time.time,
        router=Router(config.deployments),
        pricers={deployment.id: pricer_for(deployment, PRICING_IDS) for deployment in config.deployments},
        started_at=time.time(),
        dispatcher=_dispatcher(config, store, clock),
    )
    app.extensions["tollgate"] = gateway
    register_error_handlers(app)
    app.before_request(request_hook(gateway.dispatcher))
    app.before_request(auth.require_master_key(config.master_key))
    for blueprint in (
        llm.blueprint,
        customers.blueprint,
        budgets.blueprint,
        spend_logs.blueprint,
        webhooks.blueprint,
        health.blueprint,
    ):
        app.register_blueprint(blueprint)
    report_startup(gateway)
    return app


class MigrationsPending(Exception):
    """The database needs migrations that belong to the release phase (TOLLGATE_MIGRATIONS=release)."""


def prepare_database(store: Store, policy: str, report: Callable[[str], None]) -> None:
    """Make the schema current before serving: a new, empty database is created in any case; an
    existing one is migrated step by step (reported with progress) unless `policy` is "release",
    where pending migrations stop the start with a message saying how to apply them."""
    pending = store.engine.pending_migrations()
    if not pending:
        return
    if policy == "release" and not migrations.is_fresh(pending):
        raise MigrationsPending(
            f"{store.engine.describe()} needs {len(pending)} migration(s) ({', '.join(pending)}); "
            "TOLLGATE_MIGRATIONS=release: run `python cli.py migrate` (the Procfile's release: line) first"
        )
    if migrations.is_fresh(pending):
        store.engine.migrate()
        report(f"created the schema of a new {store.engine.describe()} ({pending[-1]})")
    else:
        store.engine.migrate(report=report)


def _dispatcher(config: Config, store: Store, clock: Callable[[], float] | None) -> Dispatcher | None:
    """The webhook outbox's delivery thread (started per worker process, see gunicorn.conf.py)."""
    if not config.webhooks_enabled:
        return None
    return Dispatcher(
        store,
        config.webhook_url,
        config.webhook_secret,
        clock=clock or time.time,
        max_backoff=config.webhook_retry_max_seconds,
        retention_seconds=config.webhook_retention_days * 86_400,
    )


def start_background_work(app: Flask) -> None:
    """Start this process's background threads: gunicorn calls it after fork.

    The webhook dispatcher is also started by the first request of a process (so it runs under
    any server); the store's upkeep has a fallback inside SQLite and runs only when started here.
    """
    gateway = app.extensions["tollgate"]
    gateway.store.engine.start_background()
    if gateway.dispatcher is not None:
        gateway.dispatcher.start()


def stop_background_work(app: Flask) -> None:
    gateway = app.extensions["tollgate"]
    if gateway.dispatcher is not None:
        gateway.dispatcher.stop()
    gateway.store.engine.stop_background()


def request_hook(dispatcher: Dispatcher | None) -> Callable[[], None]:
    """What runs before every request, as one hook (Flask's dispatch of each costs a dozen calls)."""
    if dispatcher is None:
        return assign_request_id
    started = dispatcher.request_started

    def begin_request() -> None:
        assign_request_id()
        started()

    return begin_request


def assign_request_id() -> None:
    """Every request gets an id (the call id of LLM calls, the key to a 500's log entry) and a start time."""
    g.request_id = str(uuid.uuid4())
    g.received_at = time.perf_counter()


def report_startup(gateway: Gateway) -> None:
    """One warning per config problem Tollgate tolerates, and the deployments it cannot price."""
    for warning in gateway.config.warnings:
        log.warning("config: %s", warning)
    for deployment in gateway.config.deployments:
        if not gateway.pricers[deployment.id].priced:
            log.warning(
                "pricing: no price for model '%s' (%s/%s); its calls are served and charged nothing. "
                "Set input_cost_per_token/output_cost_per_token or model_info.base_model.",
                deployment.model_name,
                deployment.provider,
                deployment.model,
            )
    log.info("serving models: %s", ", ".join(gateway.router.model_names()))


def configure_logging() -> None:
    """Send Tollgate's log lines to stderr unless the host application already did."""
    if log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
