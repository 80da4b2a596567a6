"""Tollgate: an LLM proxy that charges every call to a customer.

`create_app()` builds the Flask app; gunicorn calls it (see `Procfile` and `gunicorn.conf.py`).
Everything a request needs lives on one `Gateway` in `app.extensions["tollgate"]`; pass `config`,
`store`, `http` or `clock` to replace the defaults (the tests do).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from flask import Flask, Response, g, request

import auth
from config import Config, load_config
from errors import error_response, register_error_handlers
from gateway import Gateway
from lifecycle import Lifecycle
from logs import configure_logging, set_request_id
from metrics import Metrics
from plain_json import PlainJSONProvider
from providers import PRICING_IDS
from providers.http import Upstreams
from providers.router import Router
from routes import activity, budgets, customers, health, llm, spend_logs, ui, ui_session, webhooks
from routes import metrics as metrics_routes
from spend import migrations
from spend.engines import open_store
from spend.pricing import pricer_for
from spend.retention import Retention
from spend.store import SpendLogFilter, Store, StoreUnavailable, holder_of
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
    config = config or load_config()
    configure_logging(config.log_level, config.log_format)
    store = store or open_store(config.database_url)
    prepare_database(store, config.migrations, report=log.info)
    missing_tier = _missing_default_tier(store, config)
    # Nothing opened here may be used after gunicorn forks: workers open their own connections.
    store.engine.close()

    app = Flask("tollgate")
    app.config["MAX_CONTENT_LENGTH"] = config.settings.max_request_bytes
    app.config["TOLLGATE_BODY_TIMEOUT"] = config.request_body_timeout
    app.json = PlainJSONProvider(app)
    metrics = Metrics(store.outbox, end_user=config.settings.end_user_metrics, clock=clock or time.time)
    gateway = Gateway(
        config=config,
        store=store,
        http=http or Upstreams(),
        clock=clock or time.time,
        router=Router(config.deployments),
        pricers={d.id: pricer_for(d, PRICING_IDS) for d in config.deployments if not d.wildcard},
        started_at=time.time(),
        dispatcher=_dispatcher(config, store, clock, metrics),
        metrics=metrics,
    )
    app.extensions["tollgate"] = gateway
    app.extensions["tollgate.retention"] = _retention(config, store, clock)
    app.wsgi_app = gateway.lifecycle.track(app.wsgi_app)
    register_error_handlers(app)
    app.before_request(request_hook(gateway.dispatcher, gateway.lifecycle))
    app.before_request(ui_session.outside_dashboard(auth.require_master_key(config.master_key)))
    ui_session.install(app, config.master_key)
    app.before_request(replace_reused_request_id(store))
    app.after_request(tag_response)
    for blueprint in (
        llm.blueprint,
        customers.blueprint,
        budgets.blueprint,
        spend_logs.blueprint,
        activity.blueprint,
        webhooks.blueprint,
        health.blueprint,
        metrics_routes.blueprint,
        ui.blueprint,
    ):
        app.register_blueprint(blueprint)
    report_startup(gateway, missing_tier)
    return app


def _missing_default_tier(store: Store, config: Config) -> str | None:
    """The default budget tier's name when it is configured and absent from the database."""
    tier = config.settings.max_end_user_budget_id
    if tier is None or store.admin.get_budget(tier) is not None:
        return None
    return tier


class MigrationsPending(Exception):
    """The database needs migrations that belong to the release phase (TOLLGATE_MIGRATIONS=release)."""


def prepare_database(store: Store, policy: str, report: Callable[[str], None]) -> None:
    """Make the schema current before serving: a new, empty database is created in any case; an
    existing one is migrated step by step (reported with progress) unless `policy` is "release",
    where pending migrations stop the start with a message saying how to apply them. A database
    that cannot be written (read-only, full) stops it too: every call would fail after being paid."""
    pending = store.engine.pending_migrations()
    if pending:
        _migrate(store, policy, pending, report)
    store.engine.check_writable()


def _migrate(store: Store, policy: str, pending: list[str], report: Callable[[str], None]) -> None:
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


def _dispatcher(config: Config, store: Store, clock: Callable[[], float] | None, metrics: Metrics) -> Dispatcher | None:
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
        on_failure=metrics.webhook_failed,
    )


def _retention(config: Config, store: Store, clock: Callable[[], float] | None) -> Retention | None:
    """The spend log's pruning thread (per worker process, like the dispatcher), when a period is set."""
    if config.spend_log_retention_seconds is None:
        return None
    return Retention(
        store.ledger,
        config.spend_log_retention_seconds,
        config.spend_log_retention_interval_seconds,
        clock=clock or time.time,
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
    retention = app.extensions.get("tollgate.retention")
    if retention is not None:
        retention.start()


def stop_background_work(app: Flask) -> None:
    gateway = app.extensions["tollgate"]
    retention = app.extensions.get("tollgate.retention")
    if retention is not None:
        retention.stop()
    if gateway.dispatcher is not None:
        gateway.dispatcher.stop()
    gateway.store.engine.stop_background()


def release_dead_worker(app: Flask, pid: int) -> None:
    """In the master, when a worker has exited: give back the budget reservations its calls held.
    A worker killed mid-call (OOM, SIGKILL) would otherwise hold them until they expire (the
    upstream timeout plus a minute), refusing its customers as if the money were spent."""
    store = app.extensions["tollgate"].store
    try:
        released = store.ledger.release_held_by(holder_of(pid))
    except StoreUnavailable as exc:
        log.error("reservations of worker %d not released (%s); they expire by themselves", pid, exc)
        return
    finally:
        store.engine.close()  # the master keeps no connection open across its next fork
    if released:
        log.warning("worker %d exited holding %d budget reservations; released", pid, released)


# Answered while draining: the orchestrator's probes (liveness says the process is fine; readiness says it is going).
PROBES = ("/health/liveliness", "/health/liveness", "/health/readiness")


def request_hook(dispatcher: Dispatcher | None, lifecycle: Lifecycle | None = None) -> Callable[[], None]:
    """What runs before every request, as one hook (Flask's dispatch of each costs a dozen calls):
    the request id, the webhook dispatcher's start, and the refusal of new requests while draining."""
    started = dispatcher.request_started if dispatcher is not None else None

    def begin_request():
        assign_request_id()
        if lifecycle is not None and lifecycle.draining and request.path not in PROBES:
            return draining_response()
        if started is not None:
            started()
        return None

    return begin_request


def draining_response() -> Response:
    """503 for a request that arrives after SIGTERM: the client should go to another instance."""
    response = error_response(
        503, "This Tollgate instance is shutting down and takes no new requests; retry", "service_unavailable"
    )
    response.headers["retry-after"] = "1"
    return response


# A client's `x-request-id` that Tollgate adopts: a token safe in headers, log lines and the spend log.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def assign_request_id() -> None:
    """Every request gets an id (the call id of LLM calls, the key to a 500's log entry) and a start
    time. The id is the client's `x-request-id` when that is a safe token, else a new uuid."""
    given = request.headers.get("x-request-id")
    g.request_id_given = given is not None and REQUEST_ID.fullmatch(given) is not None
    g.request_id = given if g.request_id_given else str(uuid.uuid4())
    set_request_id(g.request_id)
    g.received_at = time.perf_counter()


def replace_reused_request_id(store: Store) -> Callable[[], None]:
    """A `before_request` hook (after authentication): an LLM call whose `x-request-id` is the id of
    a call already in the spend log gets a new id instead, since a call id names one call (a client
    that retries with the same header gets a fresh id for the retry). The lookup is by index, and
    only for calls that bring their own id."""

    def check() -> None:
        if not g.request_id_given or request.blueprint != "llm" or request.method != "POST":
            return
        if store.ledger.count_spend_logs(SpendLogFilter(request_id=g.request_id)) == 0:
            return
        given, g.request_id = g.request_id, str(uuid.uuid4())
        set_request_id(g.request_id)
        log.info("request id: x-request-id %s names an earlier call; this call's id is %s", given, g.request_id)

    return check


def tag_response(response: Response) -> Response:
    """Every response (errors, admin routes, streams) says which request id it was served under."""
    request_id = g.get("request_id")
    if request_id is not None:
        response.headers["x-request-id"] = request_id
    return response


def report_startup(gateway: Gateway, missing_tier: str | None = None) -> None:
    """One warning per config problem Tollgate tolerates, the deployments it cannot price, a default
    budget tier that does not exist, and a config whose every deployment was skipped."""
    for warning in gateway.config.warnings:
        log.warning("config: %s", warning)
    if missing_tier is not None:
        log.error(
            "budgets: the default budget tier '%s' (litellm_settings.max_end_user_budget_id) does not exist; "
            "calls of customers without a budget of their own are refused until it is created with POST /budget/new",
            missing_tier,
        )
    if not gateway.config.deployments:
        log.error("models: no deployment is served (every model_list entry was skipped); readiness answers 503")
    for deployment in gateway.config.deployments:
        if deployment.wildcard:
            continue
        if not gateway.pricers[deployment.id].priced:
            log.warning(
                "pricing: no price for model '%s' (%s/%s); its calls are served and charged nothing. "
                "Set input_cost_per_token/output_cost_per_token or model_info.base_model.",
                deployment.model_name,
                deployment.provider,
                deployment.model,
            )
    log.info("serving models: %s", ", ".join(gateway.router.model_names()))
