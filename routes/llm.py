"""The LLM routes: chat completions (streaming or not), embeddings and the model list.

Each route reads and checks the body, then hands the call to `calls`: `begin` (customer,
enforcement, deployments, Idempotency-Key, budget reservation), `complete` or `open_stream`
(upstream with retries), and settlement. Here the answer is shaped: the upstream's JSON with
Tollgate's headers, or server-sent events relayed chunk by chunk as they arrive.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, g, jsonify, request

import calls
import gateway as gateway_state
from errors import BadRequest, ProxyError
from providers.base import UpstreamError
from providers.http import TransportError
from providers.streaming import sse
from routes import json_body
from spend.money import usd_text
from spend.store import Replay

blueprint = Blueprint("llm", __name__)

CHAT_PATHS = (
    "/chat/completions",
    "/v1/chat/completions",
    "/openai/deployments/<path:model>/chat/completions",
    "/engines/<path:model>/chat/completions",
)
EMBEDDING_PATHS = ("/embeddings", "/v1/embeddings", "/openai/deployments/<path:model>/embeddings")
# Streams longer than this are not kept for Idempotency-Key replays (the key is released instead).
MAX_REPLAY_BYTES = 1024 * 1024


def chat_completions(model: str | None = None):
    body = json_body()
    if model is not None:
        body["model"] = model
    if not isinstance(body.get("messages"), list):
        raise BadRequest("`messages` must be a list of chat messages", param="messages")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise BadRequest("`stream` must be true or false", param="stream")
    return _serve(body, "chat/completions", stream=bool(body.get("stream")))


def embeddings(model: str | None = None):
    body = json_body()
    if model is not None:
        body["model"] = model
    given = body.get("input")
    if not isinstance(given, str | list) or not given:
        raise BadRequest("`input` must be a string or a non-empty list", param="input")
    return _serve(body, "embeddings", stream=False)


for _path in CHAT_PATHS:
    blueprint.add_url_rule(_path, view_func=chat_completions, methods=["POST"])
for _path in EMBEDDING_PATHS:
    blueprint.add_url_rule(_path, view_func=embeddings, methods=["POST"])


@blueprint.get("/models")
@blueprint.get("/v1/models")
def models():
    gw = gateway_state.current()
    data = [
        {"id": name, "object": "model", "created": int(gw.started_at), "owned_by": gw.router.group(name)[0].provider}
        for name in gw.router.model_names()
    ]
    return jsonify({"object": "list", "data": data})


def _serve(body: dict, path: str, *, stream: bool) -> Response:
    gw = gateway_state.current()
    call = calls.begin(gw, body, request.headers, path, g.request_id, g.get("key_hash"))
    if isinstance(call, Replay):
        return _replay(call)
    if stream:
        return _stream_response(call, calls.open_stream(call))
    reply, record = calls.complete(call)
    response = Response(reply.raw, status=200, mimetype="application/json")
    return _with_headers(response, record.request_id, call, usd_text(record.cost_units))


def _with_headers(response: Response, request_id: str, call: calls.Call, cost: str | None) -> Response:
    # Time in Tollgate so far, upstream waits excluded (for a stream: until its first byte).
    overhead = time.perf_counter() - g.received_at - call.upstream_seconds
    response.headers["x-litellm-overhead-duration-ms"] = f"{overhead * 1000:.3f}"
    response.headers["x-litellm-call-id"] = request_id
    response.headers["x-litellm-model-id"] = call.served.id
    if cost is not None:
        response.headers["x-litellm-response-cost"] = cost
    if call.served.region_name:
        response.headers["x-litellm-model-region"] = call.served.region_name
    return response


def _stream_response(call: calls.Call, stream) -> Response:
    """Relay the stream as it comes; settle it in `finally`, whether it ended, broke or was left."""
    keep = call.admitted.settlement.idempotency is not None

    def generate():
        transcript, size, error = [], 0, None
        try:
            for event in stream:
                if keep and size <= MAX_REPLAY_BYTES:
                    transcript.append(event)
                    size += len(event)
                yield event
        except (TransportError, UpstreamError) as exc:
            error = f"stream cut by the upstream ({type(exc).__name__})"
            status = exc.client_status if isinstance(exc, UpstreamError) else 502
            yield sse({"error": {"message": error, "type": "upstream_error", "param": None, "code": str(status)}})
        finally:
            stream.close()
            replay = b"".join(transcript) if keep and size <= MAX_REPLAY_BYTES else None
            calls.finish_stream(call, stream, replay, error)

    response = Response(generate(), status=200, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return _with_headers(response, call.request_id, call, None)


def _replay(earlier: Replay) -> Response:
    """The answer of the first call with this Idempotency-Key and customer, charged nothing again."""
    if earlier.in_flight:
        raise ProxyError(
            "A request with this Idempotency-Key is still in progress; retry when it has finished",
            status=409,
            type="idempotency_conflict",
            param="Idempotency-Key",
        )
    response = Response(earlier.response, status=200, content_type=earlier.content_type)
    response.headers["x-litellm-call-id"] = earlier.request_id
    response.headers["x-litellm-response-cost"] = usd_text(earlier.cost_units or 0)
    response.headers["Idempotent-Replayed"] = "true"
    return response
