"""One LLM call, from admission to settlement (SPEC §4, §7, §8).

begin()       resolve the customer; refuse a blocked one, a model outside its allowlist or
              region; order the deployments; take the Idempotency-Key; reserve the budget.
              Nothing has reached an upstream yet.
complete()    try the deployments in order: connection errors, timeouts, 429 and 5xx are
open_stream() retried on the next deployment, up to `num_retries` (never once a stream has
              sent its first byte to the client).
settle()      charge the serving deployment's price for the usage, once, with the spend-log
              row, the reservation's release and the webhook events, in one transaction.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from config import Deployment
from errors import AuthError, BadRequest, Forbidden, ProxyError
from gateway import Gateway
from providers import PROVIDERS, tokens
from providers.apis import CHAT, COMPLETIONS, NAMES, RESPONSES
from providers.base import Reply, UpstreamError, UpstreamHTTPError, Usage, redact
from providers.router import MAX_MODEL_NAME
from providers.streaming import Stream
from spend import admission
from spend.attribution import resolve_customer_id
from spend.money import usd_text
from spend.pricing import Pricer
from spend.store import CallRecord, Conflict, Customer, IdempotencyClaim, Replay
from webhooks.events import announcements

log = logging.getLogger("tollgate.calls")
MAX_IDEMPOTENCY_KEY = 255
MAX_RESPONSE_ID = 255


@dataclass
class Call:
    gw: Gateway
    request_id: str
    customer_id: str | None
    body: dict
    path: str
    candidates: list[Deployment]
    admitted: admission.Admitted
    started: float
    served: Deployment | None = None
    attempts: int = 0
    upstream_seconds: float = 0.0  # time spent waiting on upstreams, for the overhead header


def begin(gw: Gateway, body: dict, headers, path: str, request_id: str, token: str | None) -> Call | Replay:
    """Everything before the upstream; a `Replay` when the Idempotency-Key was used already.

    A call refused by policy (no customer where one is required, blocked, model or region not
    allowed, unpriced model blocked, budget, rate limit) is recorded by `refuse`; malformed input
    (a bad customer id, model name or Idempotency-Key) is not a call and leaves nothing.
    """
    settings = gw.config.settings
    customer_id = resolve_customer_id(headers, body, settings.customer_headers)
    with _refusals(gw, request_id, customer_id, body):
        if customer_id is None and settings.enforce_user_param:
            raise AuthError("Authentication Error, 'user' param not passed in. 'enforce_user_param'=True")
        customer = gw.store.admin.get_customer(customer_id) if customer_id else None
        model = admission.gate(customer_id, customer, body.get("model"))
    body["model"] = model
    candidates, pricer = _deployments(gw, request_id, customer_id, customer, body, path)
    claim = _idempotency_claim(headers, customer_id)
    now = gw.clock()
    if claim is not None:
        earlier = gw.store.ledger.claim_idempotency(claim, request_id, now, hold=candidates[0].timeout + 60)
        if earlier is not None:
            return earlier
    try:
        admitted = admission.Admitted()
        if customer_id is not None:
            with _taken_id(request_id), _refusals(gw, request_id, customer_id, body):
                admitted = admission.admit(
                    gw.store.ledger,
                    request_id=request_id,
                    customer_id=customer_id,
                    budget=admission.applicable_budget(gw.store.admin, customer, settings.max_end_user_budget_id),
                    deployment=candidates[0],
                    pricer=pricer,
                    body=body,
                    strict=settings.budget_enforcement == "strict",
                    exceeded_status=settings.budget_exceeded_status_code,
                    now=now,
                    notify=gw.notify(token),
                )
    except BaseException:
        if claim is not None:
            gw.store.ledger.drop_idempotency(claim, request_id)
        raise
    output_key = _output_key(body, path)
    if admitted.max_tokens is not None and output_key is not None:
        body[output_key] = admitted.max_tokens
    admitted = replace(admitted, settlement=replace(admitted.settlement, idempotency=claim))
    return Call(gw, request_id, customer_id, body, path, candidates, admitted, now)


def _deployments(
    gw: Gateway, request_id: str, customer_id: str | None, customer: Customer | None, body: dict, path: str
) -> tuple[list[Deployment], Pricer]:
    """The deployments that may serve the call, in order, and the first one's pricing.

    An unknown model or an API the model cannot serve is bad input; a region the customer may not
    leave (400) or an unpriced model that must not be served (403) refuses the call."""
    model = body["model"]
    candidates = gw.router.candidates(model)
    region = customer.allowed_model_region if customer else None
    if region is not None:
        with _refusals(gw, request_id, customer_id, body):
            candidates = gw.router.candidates(model, region)
    candidates = _serving(candidates, path)
    pricer = gw.pricer(candidates[0])
    if not pricer.priced and gw.config.settings.block_requests_for_models_without_pricing:
        with _refusals(gw, request_id, customer_id, body):
            raise Forbidden(
                f"Model '{model}' has no pricing, so Tollgate cannot price the request. "
                "Set input_cost_per_token/output_cost_per_token for it in config.yaml.",
                type="model_cost_map_missing",
                param="model",
            )
    return candidates, pricer


def _serving(candidates: list[Deployment], path: str) -> list[Deployment]:
    """The candidates whose provider serves the API of `path`; a 400 saying so when none does."""
    able = [deployment for deployment in candidates if path in PROVIDERS[deployment.provider].routes]
    if not able:
        providers = ", ".join(sorted({deployment.provider for deployment in candidates}))
        raise BadRequest(
            f"Model '{candidates[0].model_name}' cannot serve {NAMES[path]}: its deployments are on "
            f"{providers}, which does not offer it. Use a model on an OpenAI-compatible deployment.",
            param="model",
        )
    return able


def _idempotency_claim(headers, customer_id: str | None) -> IdempotencyClaim | None:
    key = headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise BadRequest(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters",
                         param="Idempotency-Key")  # fmt: skip
    return IdempotencyClaim(customer_id or "", key)


def _output_key(body: dict, path: str) -> str | None:
    """The body field that bounds the answer's tokens on this API (embeddings have none)."""
    if path == RESPONSES:
        return "max_output_tokens"
    if path == COMPLETIONS:
        return "max_tokens"
    if path != CHAT:
        return None
    return "max_completion_tokens" if "max_completion_tokens" in body and "max_tokens" not in body else "max_tokens"


def complete(call: Call) -> tuple[Reply, CallRecord]:
    """Serve a non-streaming call and charge it."""
    try:
        reply = _attempt(call, lambda adapter, d: adapter.complete(call.gw.http, d, call.body, call.path))
    except BaseException as exc:
        fail(call, exc)
        raise
    raw = reply.raw if reply.raw is not None else json.dumps(reply.body, separators=(",", ":")).encode()
    record = settle(call, reply.usage, response=raw, content_type="application/json", response_id=reply.response_id)
    return replace(reply, raw=raw), record


def open_stream(call: Call) -> Stream:
    """Open the stream on the first deployment that answers; settle it with `finish_stream`."""
    try:
        return _attempt(call, lambda adapter, d: adapter.stream(call.gw.http, d, call.body, call.path))
    except BaseException as exc:
        fail(call, exc)
        raise


def finish_stream(call: Call, stream: Stream, transcript: bytes | None, error: str | None) -> CallRecord:
    """Charge a stream when it ends, however it ends: its usage, or Tollgate's estimate."""
    usage, estimated = stream.usage, stream.usage is None
    if usage is None:
        usage = Usage(prompt_tokens=tokens.count_prompt(call.body), completion_tokens=tokens.count_text(stream.text))
    replayable = transcript if not estimated and error is None else None
    return settle(
        call,
        usage,
        estimated=estimated,
        error=error,
        response=replayable,
        content_type="text/event-stream",
        response_id=stream.response_id,
    )


def _attempt(call: Call, action):
    retries = call.gw.config.settings.num_retries
    for attempt in range(retries + 1):
        deployment = call.candidates[attempt % len(call.candidates)]
        call.served, call.attempts = deployment, attempt + 1
        started = time.perf_counter()
        try:
            result = action(PROVIDERS[deployment.provider].adapter, deployment)
        except UpstreamError as exc:
            call.upstream_seconds += time.perf_counter() - started
            _attribute(exc, deployment, call.gw.config.master_key)
            if not _retryable(exc):
                raise
            call.gw.router.failed(deployment)
            if attempt == retries:
                raise
            log.warning("retry request_id=%s deployment=%s after: %s", call.request_id, deployment.id, exc.message)
            continue
        call.upstream_seconds += time.perf_counter() - started
        call.gw.router.succeeded(deployment)
        return result
    raise AssertionError("unreachable")


def _attribute(exc: UpstreamError, deployment: Deployment, master_key: str) -> None:
    """Name the deployment the error came from, and make sure no credential rides along in its message
    (the adapter already took out the keys it sent; this also covers the master key)."""
    exc.deployment_id = deployment.id
    exc.message = redact(exc.message, (deployment.api_key, master_key))


def _retryable(exc: UpstreamError) -> bool:
    if isinstance(exc, UpstreamHTTPError):
        return exc.status == 429 or exc.status >= 500
    return exc.client_status >= 500


def settle(
    call: Call, usage: Usage, *, estimated=False, error=None, response=None, content_type=None, response_id=None
) -> CallRecord:
    """Charge the call once at the serving deployment's price."""
    gw, deployment = call.gw, call.served
    pricer = gw.pricer(deployment)
    cost = pricer.cost(usage)
    record = _record(
        call, usage, cost, estimated=estimated, error=error, priced=pricer.priced, response_id=_text_id(response_id)
    )
    settlement = replace(call.admitted.settlement, response=response, content_type=content_type)
    notify = call.admitted.notify
    announcing = notify is not None and record.customer_id is not None and record.priced
    if announcing:
        events, on_spend = announcements(
            notify, record.customer_id, record.cost_units, record.request_id, record.ended_at
        )
        settlement = replace(settlement, events=events, on_spend=on_spend)
    gw.store.ledger.record_call(record, settlement)
    if announcing:
        gw.dispatcher.wake()
    log_call(record, 200)
    gw.metrics.observe_call(record, 200, call.upstream_seconds)
    return record


def fail(call: Call, exc: BaseException) -> None:
    """A call that got no answer: logged, charged nothing, its reservation and key released."""
    call.served = call.served or call.candidates[0]
    message = exc.message if isinstance(exc, UpstreamError) else f"{type(exc).__name__} in Tollgate"
    message = redact(message, (call.served.api_key, call.gw.config.master_key))
    record = _record(call, Usage(), 0, status="failure", error=message)
    call.gw.store.ledger.record_call(record, call.admitted.settlement)
    status = exc.client_status if isinstance(exc, UpstreamError) else 500
    log_call(record, status)
    call.gw.metrics.observe_call(record, status, call.upstream_seconds, error=type(exc).__name__)


def refuse(
    gw: Gateway, request_id: str, customer_id: str | None, model: str | None, status: int, error_type: str, reason: str
) -> None:
    """A call refused before any upstream (no customer where one is required, blocked, model or
    region not allowed, over budget, rate limited): one log line, and a spend-log row (status
    `failure`, cost 0, the error's type and message) counted as failed in the daily activity.

    The refusal stands whatever happens here: a store that cannot record it is logged, and the
    client still gets the refusal, not a 500."""
    log.info(
        "refused request_id=%s customer=%s model=%s status=%d error_type=%s reason=%s",
        request_id,
        json.dumps(customer_id, ensure_ascii=False),
        json.dumps(model, ensure_ascii=False),
        status,
        error_type,
        json.dumps(reason, ensure_ascii=False),
    )
    gw.metrics.observe_refusal(customer_id, model, status, error_type, reason)
    now = gw.clock()
    record = CallRecord(
        request_id=request_id,
        customer_id=customer_id,
        model_group=model or "",
        provider_model="",
        deployment_id="",
        usage=Usage(),
        cost_units=0,
        started_at=now,
        ended_at=now,
        status="failure",
        error=f"{error_type}: {reason}",
        attempts=0,
    )
    try:
        gw.store.ledger.record_refusal(record)
    except Exception as exc:  # noqa: BLE001 - a refusal is answered even when it cannot be kept
        log.error("refusal not recorded request_id=%s: %s: %s", request_id, type(exc).__name__, exc)


@contextmanager
def _taken_id(request_id: str) -> Iterator[None]:
    """A call whose id (a client's `x-request-id`) is the id of another call in flight is refused
    (409) before it reserves anything."""
    try:
        yield
    except Conflict:
        raise ProxyError(
            f"x-request-id '{request_id}' is the id of a call still in flight: send a new id, or none",
            status=409,
            type="request_id_in_use",
            param="x-request-id",
        ) from None


@contextmanager
def _refusals(gw: Gateway, request_id: str, customer_id: str | None, body: dict) -> Iterator[None]:
    """Record a refusal raised inside the block (`refuse`), then let it reach the client."""
    try:
        yield
    except ProxyError as exc:
        refuse(gw, request_id, customer_id, _model_name(body.get("model")), exc.status, exc.type, exc.message)
        raise


def _model_name(value: object) -> str | None:
    """The requested model as the spend log can keep it: a short printable name, else None."""
    if isinstance(value, str) and 0 < len(value) <= MAX_MODEL_NAME and value.isprintable():
        return value
    return None


def _record(call: Call, usage: Usage, cost_units: int, **outcome) -> CallRecord:
    deployment = call.served
    return CallRecord(
        request_id=call.request_id,
        customer_id=call.customer_id,
        model_group=deployment.model_name,
        provider_model=f"{deployment.provider}/{deployment.model}",
        deployment_id=deployment.id,
        usage=usage,
        cost_units=cost_units,
        started_at=call.started,
        ended_at=call.gw.clock(),
        attempts=max(call.attempts, 1),
        **outcome,
    )


def _text_id(value) -> str | None:
    """An upstream response id worth keeping: a short printable string (anything else is dropped)."""
    if isinstance(value, str) and 0 < len(value) <= MAX_RESPONSE_ID and value.isprintable():
        return value
    return None


def log_call(record: CallRecord, status: int) -> None:
    """The one log line per call: never a key, a header or a prompt."""
    usage = record.usage
    log.info(
        "call request_id=%s customer=%s model=%s deployment=%s attempts=%d status=%s prompt_tokens=%d "
        "completion_tokens=%d cost=%s estimated=%s latency_ms=%d%s",
        record.request_id,
        json.dumps(record.customer_id, ensure_ascii=False),
        record.model_group,
        record.deployment_id,
        record.attempts,
        status,
        usage.prompt_tokens,
        usage.completion_tokens,
        usd_text(record.cost_units),
        record.estimated,
        record.latency_ms,
        "" if record.priced or status != 200 else " failed_tracking_spend=unpriced_model",
    )
