"""Prometheus metrics: LiteLLM's names and labels, right across gunicorn's workers.

Counted where a call ends (`calls.settle`, `calls.fail`, `calls.refuse`) and where a webhook
post fails (`webhooks.dispatcher`); the outbox's depth is read from the store at scrape time.

Under gunicorn, `gunicorn.conf.py` points `PROMETHEUS_MULTIPROC_DIR` at an emptied directory
before anything imports prometheus_client: every worker then writes its values to its own
memory-mapped files there, and a scrape, answered by any worker, adds up the files of every
worker, those that died included (the master marks them dead, which keeps their counters).
Without that variable (the Flask test client, `cli.py`) each app keeps its values in its own
in-process registry.

Label sets are LiteLLM's, so its dashboards and alerts work unchanged. Tollgate has no virtual
keys, teams or internal users: `hashed_api_key`, `api_key_alias`, `team`, `team_alias` and
`user` are always empty. `end_user` holds the customer only with
`litellm_settings.enable_end_user_cost_tracking_prometheus_only: true` (customer ids make one
series each); otherwise it is empty too.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from spend.money import usd_text
from spend.store import CallRecord, Outbox, StoreUnavailable

log = logging.getLogger("tollgate.metrics")

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# LiteLLM's latency buckets (seconds), so its dashboards' quantiles read the same.
LATENCY_BUCKETS = (
    0.005, 0.00625, 0.0125, 0.025, 0.05, 0.1, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0,
    6.5, 7.0, 7.5, 8.0, 8.5, 9.0, 9.5, 10.0, 15.0, 20.0, 25.0, 30.0, 60.0, 120.0, 180.0, 240.0, 300.0,
    float("inf"),
)  # fmt: skip

# The labels of LiteLLM's metrics (litellm/types/integrations/prometheus.py), in its order.
_WHO = ("end_user", "hashed_api_key", "api_key_alias")
_TEAM = ("team", "team_alias", "user")
SPEND_LABELS = (*_WHO, "model", *_TEAM)
REQUEST_LABELS = SPEND_LABELS
TOKEN_LABELS = (*_WHO, "model", *_TEAM, "requested_model")
PROXY_TOTAL_LABELS = (*_WHO, "requested_model", *_TEAM, "status_code")
PROXY_FAILED_LABELS = (*_WHO, "requested_model", *_TEAM, "exception_status", "exception_class")
TOTAL_LATENCY_LABELS = (*_WHO, "requested_model", *_TEAM, "model")
API_LATENCY_LABELS = ("model", "hashed_api_key", "api_key_alias", "team", "team_alias", "requested_model",
                      "end_user", "user")  # fmt: skip


# `tollgate_refusals_total{reason}`: the refusal's error type, named for the operator.
REASONS = {
    "auth_error": "customer_required",
    "customer_model_access_denied": "model_not_allowed",
    "customer_region_denied": "region_not_allowed",
    "model_cost_map_missing": "unpriced_model",
    "budget_exceeded": "budget",
    "budget_tier_missing": "budget_tier_missing",
    "rate_limit_error": "rate_limit",
}
BLOCKED = "User blocked from making LLM API Calls"  # LiteLLM's message, the one refusal typed invalid_request_error


def refusal_reason(error_type: str, message: str) -> str:
    """A short, bounded name for why a call was refused (never the message: it names the customer)."""
    if message.startswith(BLOCKED):
        return "blocked"
    return REASONS.get(error_type, error_type)


def multiprocess() -> bool:
    """Whether the values live in the shared directory (under gunicorn) rather than in this process."""
    return bool(os.environ.get(MULTIPROCESS_DIR))


@dataclass(frozen=True)
class ServedSeries:
    """The series of one (customer, model, group) that a served call adds to."""

    requests: Counter
    answered: Counter  # litellm_proxy_total_requests_metric, status 200
    spend: Counter
    input_tokens: Counter
    output_tokens: Counter
    total_tokens: Counter
    total_latency: Histogram
    api_latency: Histogram


class Metrics:
    """One app's metrics. `outbox` is read at each scrape; `end_user` fills the `end_user` label."""

    def __init__(self, outbox: Outbox | None = None, *, end_user: bool = False, clock: Callable[[], float] = time.time):
        self.end_user = end_user
        self._served: dict[tuple[str, str, str], ServedSeries] = {}
        self.registry = CollectorRegistry()
        self.outbox_collector = OutboxCollector(outbox, clock)
        self.registry.register(self.outbox_collector)
        self._declare(self.registry)

    def _declare(self, registry: CollectorRegistry) -> None:
        def counter(name, documentation, labels=()):
            return Counter(name, documentation, labels, registry=registry)

        def histogram(name, documentation, labels):
            return Histogram(name, documentation, labels, registry=registry, buckets=LATENCY_BUCKETS)

        self.requests = counter("litellm_requests_metric", "LLM calls served or failed by an upstream", REQUEST_LABELS)
        self.proxy_total = counter(
            "litellm_proxy_total_requests_metric", "LLM requests answered, by status code", PROXY_TOTAL_LABELS
        )
        self.proxy_failed = counter(
            "litellm_proxy_failed_requests_metric", "LLM requests answered with an error", PROXY_FAILED_LABELS
        )
        self.spend = counter("litellm_spend_metric", "Spend charged, in USD", SPEND_LABELS)
        self.input_tokens = counter("litellm_input_tokens_metric", "Prompt tokens of charged calls", TOKEN_LABELS)
        self.output_tokens = counter("litellm_output_tokens_metric", "Completion tokens of charged calls", TOKEN_LABELS)
        self.total_tokens = counter("litellm_total_tokens_metric", "All tokens of charged calls", TOKEN_LABELS)
        self.total_latency = histogram(
            "litellm_request_total_latency_metric", "Seconds from admission to settlement", TOTAL_LATENCY_LABELS
        )
        self.api_latency = histogram(
            "litellm_llm_api_latency_metric", "Seconds spent waiting on upstreams", API_LATENCY_LABELS
        )
        self.refusals = counter("tollgate_refusals", "Calls refused before any upstream, by reason", ("reason",))
        self.webhook_failures = counter(
            "tollgate_webhook_delivery_failures", "Webhook posts that failed (each is retried or dead)"
        )

    def _who(self, customer_id: str | None) -> dict[str, str]:
        """The identity labels: only `end_user` can be known, and only when the operator opted in."""
        who = dict.fromkeys((*_WHO, *_TEAM), "")
        if self.end_user and customer_id:
            who["end_user"] = customer_id
        return who

    def observe_call(self, record: CallRecord, status: int, upstream_seconds: float, error: str = "") -> None:
        """A call that reached an upstream ended: served (`status` 200) or failed (`error`, its class)."""
        who = self._who(record.customer_id)
        model = record.provider_model.partition("/")[2] or record.provider_model
        group = record.model_group
        if status >= 400:
            self.requests.labels(**who, model=model).inc()
            self.proxy_total.labels(**who, requested_model=group, status_code=str(status)).inc()
            self.proxy_failed.labels(**who, requested_model=group, exception_status=str(status),
                                     exception_class=error).inc()  # fmt: skip
            return
        usage, served = record.usage, self._served_series(who, model, group)
        served.requests.inc()
        served.answered.inc()
        served.spend.inc(float(usd_text(record.cost_units)))
        served.input_tokens.inc(usage.prompt_tokens)
        served.output_tokens.inc(usage.completion_tokens)
        served.total_tokens.inc(usage.prompt_tokens + usage.completion_tokens)
        served.total_latency.observe(max(record.ended_at - record.started_at, 0.0))  # latency_ms, unrounded
        served.api_latency.observe(upstream_seconds)

    def _served_series(self, who: dict[str, str], model: str, group: str) -> ServedSeries:
        """The series a served call adds to, looked up once per (customer, model, group): finding a
        series by its labels costs more than adding to it."""
        key = (who["end_user"], model, group)
        series = self._served.get(key)
        if series is None:
            tokens = {**who, "model": model, "requested_model": group}
            series = ServedSeries(
                requests=self.requests.labels(**who, model=model),
                answered=self.proxy_total.labels(**who, requested_model=group, status_code="200"),
                spend=self.spend.labels(**who, model=model),
                input_tokens=self.input_tokens.labels(**tokens),
                output_tokens=self.output_tokens.labels(**tokens),
                total_tokens=self.total_tokens.labels(**tokens),
                total_latency=self.total_latency.labels(**tokens),
                api_latency=self.api_latency.labels(**tokens),
            )
            self._served[key] = series  # a race only builds the same series twice
        return series

    def observe_refusal(
        self, customer_id: str | None, model: str | None, status: int, error_type: str, reason: str
    ) -> None:
        """A call refused before any upstream (blocked, budget, rate limit, ...)."""
        who = self._who(customer_id)
        requested = model or ""
        self.proxy_total.labels(**who, requested_model=requested, status_code=str(status)).inc()
        self.proxy_failed.labels(**who, requested_model=requested, exception_status=str(status),
                                 exception_class=error_type).inc()  # fmt: skip
        self.refusals.labels(reason=refusal_reason(error_type, reason)).inc()

    def webhook_failed(self) -> None:
        """A webhook post failed (connection error or a non-2xx answer)."""
        self.webhook_failures.inc()

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape's body and content type (Prometheus text, or OpenMetrics when asked for)."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self._scraped()), content_type

    def _scraped(self) -> CollectorRegistry:
        if not multiprocess():
            return self.registry
        # Every worker's files, the dead ones' included, plus what is read from the store now.
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(self.outbox_collector)
        return registry


class OutboxCollector:
    """The webhook outbox's depth, read from the store when scraped (the same for every worker)."""

    def __init__(self, outbox: Outbox | None, clock: Callable[[], float]):
        self.outbox, self.clock = outbox, clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.outbox is None:
            return
        try:
            depth = self.outbox.pending_depth()
        except StoreUnavailable as exc:
            log.warning("metrics: outbox depth not read: %s", exc)
            return
        age = max(self.clock() - depth.oldest_created_at, 0.0) if depth.oldest_created_at is not None else 0.0
        yield GaugeMetricFamily(
            "tollgate_outbox_pending_events", "Webhook events waiting for delivery", value=depth.pending
        )
        yield GaugeMetricFamily(
            "tollgate_outbox_oldest_pending_age_seconds",
            "Age of the oldest webhook event waiting for delivery (0 when none waits)",
            value=age,
        )
