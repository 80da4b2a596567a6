"""The LLM routes: chat completions, text completions and the Responses API (streaming or not),
embeddings, and the model list.

Each route reads and checks the body, then hands the call to `calls`: `begin` (customer,
enforcement, deployments, Idempotency-Key, budget reservation), `complete` or `open_stream`
(upstream with retries), and settlement. Here the answer is shaped: the upstream's JSON with
Tollgate's headers, or server-sent events relayed chunk by chunk as they arrive.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, g, jsonify, request

import calls
import gateway as gateway_state
from errors import BadRequest, NotFound, ProxyError
from providers.apis import CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES
from providers.base import UpstreamError
from providers.http import TransportError
from providers.streaming import sse
from routes import Headers, json_body
from spend.money import usd_text
from spend.store import Replay, StoreUnavailable

blueprint = Blueprint("llm", __name__)
log = logging.getLogger("tollgate.calls")

CHAT_PATHS = (
    "/chat/completions",
    "/v1/chat/completions",
    "/openai/deployments/<path:model>/chat/completions",
    "/engines/<path:model>/chat/completions",
)
EMBEDDING_PATHS = ("/embeddings", "/v1/embeddings", "/openai/deployments/<path:model>/embeddings")
COMPLETION_PATHS = (
    "/completions",
    "/v1/completions",
    "/openai/deployments/<path:model>/completions",
    "/engines/<path:model>/completions",
)
RESPONSES_PATHS = ("/responses", "/v1/responses")
# Streams longer than this are not kept for Idempotency-Key replays (the key is released instead).
MAX_REPLAY_BYTES = 1024 * 1024
UNCHARGED = "The spend store could not record this call, so its answer is not delivered complete; retry shortly"


def chat_completions(model: str | None = None):
    body = _body(model)
    if not isinstance(body.get("messages"), list):
        raise BadRequest("`messages` must be a list of chat messages", param="messages")
    return _serve(body, CHAT, stream=_streamed(body))


def completions(model: str | None = None):
    """Legacy text completions (`prompt` in, `choices[].text` out), relayed as they are."""
    body = _body(model)
    prompt = body.get("prompt")
    if not isinstance(prompt, str | list) or (isinstance(prompt, list) and not prompt):
        raise BadRequest("`prompt` must be a string or a non-empty list", param="prompt")
    return _serve(body, COMPLETIONS, stream=_streamed(body))


def responses():
    """The OpenAI Responses API, relayed to OpenAI-compatible deployments."""
    body = _body(None)
    if "input" in body and not isinstance(body["input"], str | list):
        raise BadRequest("`input` must be a string or a list of input items", param="input")
    return _serve(body, RESPONSES, stream=_streamed(body))


def embeddings(model: str | None = None):
    body = _body(model)
    given = body.get("input")
    if not isinstance(given, str | list) or not given:
        raise BadRequest("`input` must be a string or a non-empty list", param="input")
    return _serve(body, EMBEDDINGS, stream=False)


def _body(model: str | None) -> dict:
    """The JSON body, with the model named in the URL (Azure and engine paths) put in it."""
    body = json_body()
    if model is not None:
        body["model"] = model
    return body


def _streamed(body: dict) -> bool:
    if "stream" in body and not isinstance(body["stream"], bool):
        raise BadRequest("`stream` must be true or false", param="stream")
    return bool(body.get("stream"))


for _paths, _view in ((CHAT_PATHS, chat_completions), (COMPLETION_PATHS, completions),
                      (RESPONSES_PATHS, responses), (EMBEDDING_PATHS, embeddings)):  # fmt: skip
    for _path in _paths:
        blueprint.add_url_rule(_path, view_func=_view, methods=["POST"])


@blueprint.get("/models")
@blueprint.get("/v1/models")
def models():
    gw = gateway_state.current()
    return jsonify({"object": "list", "data": [_model_card(gw, name) for name in gw.router.model_names()]})


@blueprint.get("/models/<path:model_id>")
@blueprint.get("/v1/models/<path:model_id>")
def model(model_id: str):
    """One model: a configured name, or one a wildcard deployment serves; 404 otherwise."""
    gw = gateway_state.current()
    if not gw.router.serves(model_id):
        raise NotFound(f"The model '{model_id}' does not exist on this proxy", param="model")
    return jsonify(_model_card(gw, model_id))


def _model_card(gw, name: str) -> dict:
    """OpenAI's model object. A wildcard's pattern is listed as written; one that picks its provider
    per call is owned by `openai`, as LiteLLM reports it."""
    try:
        owner = gw.router.group(name)[0].provider or "openai"
    except ProxyError:
        owner = next(d.provider for d in gw.config.deployments if d.model_name == name) or "openai"
    return {"id": name, "object": "model", "created": int(gw.started_at), "owned_by": owner}


def _serve(body: dict, path: str, *, stream: bool) -> Response:
    gw = gateway_state.current()
    call = calls.begin(gw, body, Headers(request.headers), path, g.request_id, g.get("key_hash"))
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
    """Relay the stream as it comes, charge it, and only then relay its final event (`[DONE]`,
    `response.completed`): a stream is never delivered complete unless it is charged. When the
    charge fails, the client gets an error event instead. A stream that broke or was left is
    charged in `finally` all the same."""
    keep = call.admitted.settlement.idempotency is not None

    def generate():
        transcript, size, error, ending = [], 0, None, None
        try:
            for event in stream:
                if keep and size <= MAX_REPLAY_BYTES:
                    transcript.append(event)
                    size += len(event)
                yield event
        except (TransportError, UpstreamError) as exc:
            error = f"stream cut by the upstream ({type(exc).__name__})"
            status = exc.client_status if isinstance(exc, UpstreamError) else 502
            ending = _error_event(call.path, error, status)
        finally:
            stream.close()
            final = stream.final if error is None else None
            # Only a whole answer is kept for Idempotency-Key replays.
            complete = keep and final is not None and size + len(final) <= MAX_REPLAY_BYTES
            replay = b"".join([*transcript, final]) if complete else None
            charged = _charge(call, stream, replay, error)
        if not charged and error is None:
            ending = _error_event(call.path, UNCHARGED, 503, "service_unavailable")
        elif ending is None:
            ending = final
        if ending is not None:
            yield ending

    response = Response(generate(), status=200, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return _with_headers(response, call.request_id, call, None)


def _charge(call: calls.Call, stream, replay: bytes | None, error: str | None) -> bool:
    """Settle the stream; False (logged) when the store could not record it."""
    try:
        calls.finish_stream(call, stream, replay, error)
    except StoreUnavailable as exc:
        log.error("stream not charged request_id=%s: %s", call.request_id, exc)
        return False
    except Exception:
        log.exception("stream not charged request_id=%s", call.request_id)
        return False
    return True


def _error_event(path: str, message: str, status: int, kind: str = "upstream_error") -> bytes:
    """The event that ends a broken stream, in the shape the API's clients read errors in."""
    if path == RESPONSES:
        error = {"type": "error", "code": kind, "message": message, "param": None}
        return b"event: error\n" + sse(error)
    return sse({"error": {"message": message, "type": kind, "param": None, "code": str(status)}})


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
