"""The LLM routes: chat completions and the model list.

A call walks straight through: resolve the customer → pick a deployment → call the upstream
through its adapter → price the usage → record spend and the spend-log row in one transaction →
answer with the upstream's body and Tollgate's headers.
"""

from __future__ import annotations

import json
import logging

from flask import Blueprint, Response, g, jsonify, request

import gateway as gateway_state
from errors import AuthError, BadRequest, Forbidden
from providers import PROVIDERS
from providers.base import Reply, UpstreamError, Usage
from routes import json_body
from spend import admission
from spend.attribution import resolve_customer_id
from spend.pricing import usd_text
from spend.store import CallRecord

blueprint = Blueprint("llm", __name__)
log = logging.getLogger("tollgate.calls")

CHAT_PATHS = (
    "/chat/completions",
    "/v1/chat/completions",
    "/openai/deployments/<path:model>/chat/completions",
    "/engines/<path:model>/chat/completions",
)


def chat_completions(model: str | None = None):
    body = json_body()
    if model is not None:
        body["model"] = model
    if not isinstance(body.get("messages"), list):
        raise BadRequest("`messages` must be a list of chat messages", param="messages")
    if body.get("stream"):
        raise BadRequest("Streaming is not supported yet: send the call without `stream: true`", param="stream")
    return relay(body, "chat/completions")


for _path in CHAT_PATHS:
    blueprint.add_url_rule(_path, view_func=chat_completions, methods=["POST"])


@blueprint.get("/models")
@blueprint.get("/v1/models")
def models():
    gw = gateway_state.current()
    data = [
        {
            "id": name,
            "object": "model",
            "created": int(gw.started_at),
            "owned_by": gw.router.group(name)[0].provider,
        }
        for name in gw.router.model_names()
    ]
    return jsonify({"object": "list", "data": data})


def relay(body: dict, path: str) -> Response:
    """Serve one non-streaming call: admit it, relay it, charge it."""
    gw = gateway_state.current()
    settings = gw.config.settings
    request_id = g.request_id
    customer_id = resolve_customer_id(request.headers, body)
    if customer_id is None and settings.enforce_user_param:
        raise AuthError("Authentication Error, 'user' param not passed in. 'enforce_user_param'=True")
    customer = gw.store.get_customer(customer_id) if customer_id else None
    model = admission.gate(customer_id, customer, body.get("model"))
    deployment = gw.router.pick(model, customer.allowed_model_region if customer else None)
    pricer = gw.pricers[deployment.id]
    if not pricer.priced and settings.block_requests_for_models_without_pricing:
        raise Forbidden(
            f"Model '{deployment.model_name}' has no pricing, so Tollgate cannot price the request. "
            "Set input_cost_per_token/output_cost_per_token for it in config.yaml.",
            type="model_cost_map_missing",
            param="model",
        )
    admitted = admission.Admitted()
    if customer_id is not None:
        admitted = admission.admit(
            gw.store,
            request_id=request_id,
            customer_id=customer_id,
            budget=admission.applicable_budget(gw.store, customer, settings.max_end_user_budget_id),
            deployment=deployment,
            pricer=pricer,
            body=body,
            strict=settings.budget_enforcement == "strict",
            exceeded_status=settings.budget_exceeded_status_code,
            now=gw.clock(),
            notify=gw.notify(g.get("key_hash")),
        )
    if admitted.max_tokens is not None:
        body[_output_key(body)] = admitted.max_tokens

    def record(usage: Usage, cost_units: int, **outcome) -> CallRecord:
        return CallRecord(
            request_id=request_id,
            customer_id=customer_id,
            model_group=deployment.model_name,
            provider_model=f"{deployment.provider}/{deployment.model}",
            deployment_id=deployment.id,
            usage=usage,
            cost_units=cost_units,
            started_at=started,
            ended_at=gw.clock(),
            priced=pricer.priced,
            **outcome,
        )

    started = gw.clock()
    try:
        reply = PROVIDERS[deployment.provider].adapter.complete(gw.http, deployment, body, path)
    except BaseException as exc:
        message = exc.message if isinstance(exc, UpstreamError) else f"{type(exc).__name__} in Tollgate"
        failed = record(Usage(), 0, status="failure", error=message)
        gw.store.record_call(failed, admitted.settlement)
        _log_call(failed, exc.client_status if isinstance(exc, UpstreamError) else 500)
        raise
    charged = record(reply.usage, pricer.cost(reply.usage))
    gw.store.record_call(charged, admitted.settlement)
    if admitted.settlement.notify is not None:
        gw.dispatcher.wake()
    _log_call(charged, 200)
    return _reply_response(reply, charged, deployment.region_name)


def _output_key(body: dict) -> str:
    return "max_completion_tokens" if "max_completion_tokens" in body and "max_tokens" not in body else "max_tokens"


def _reply_response(reply: Reply, record: CallRecord, region: str | None) -> Response:
    payload = reply.raw if reply.raw is not None else json.dumps(reply.body, separators=(",", ":")).encode()
    response = Response(payload, status=200, mimetype="application/json")
    response.headers["x-litellm-call-id"] = record.request_id
    response.headers["x-litellm-response-cost"] = usd_text(record.cost_units)
    response.headers["x-litellm-model-id"] = record.deployment_id
    if region:
        response.headers["x-litellm-model-region"] = region
    return response


def _log_call(record: CallRecord, status: int) -> None:
    """The one log line per call: never a key, a header or a prompt."""
    usage = record.usage
    log.info(
        "call request_id=%s customer=%s model=%s deployment=%s status=%s prompt_tokens=%d completion_tokens=%d "
        "cost=%s latency_ms=%d%s",
        record.request_id,
        json.dumps(record.customer_id, ensure_ascii=False),
        record.model_group,
        record.deployment_id,
        status,
        usage.prompt_tokens,
        usage.completion_tokens,
        usd_text(record.cost_units),
        record.latency_ms,
        "" if record.priced or status != 200 else " failed_tracking_spend=unpriced_model",
    )
