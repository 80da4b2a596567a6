"""The OpenAI-compatible adapter: OpenAI itself and every provider that speaks its API.

It relays chat completions, embeddings, legacy text completions and the Responses API: the
client's body with `model` replaced, to `{api_base}/{path}`. Only the usage is read from the
answer (the Responses API names it `input_tokens`/`output_tokens`).
"""

from __future__ import annotations

from providers.apis import RESPONSES
from providers.base import HttpCall, Reply, UnsupportedParams, label, send, usage_from_openai, usage_from_responses
from providers.http import Upstreams
from providers.streaming import Stream, open_stream, openai_stream, responses_stream, wants_usage

# Request fields that are LiteLLM's or Tollgate's own, never sent to an upstream.
PROXY_ONLY = frozenset(
    {"litellm_metadata", "fallbacks", "context_window_fallbacks", "num_retries", "mock_response", "caching", "tags"}
)


class OpenAIAdapter:
    """Relays the client's body with `model` replaced; the answer is already OpenAI-shaped.

    `rejects` names parameters the provider is known to refuse: with `drop_params` they are
    dropped, without it the call is refused with a 400 naming them, as LiteLLM does. Providers
    other than OpenAI itself do not get `metadata`, which clients send for Tollgate's sake.
    """

    def __init__(self, default_base: str | None = None, rejects: frozenset[str] = frozenset(), metadata: bool = False):
        self.default_base = default_base
        self.rejects = rejects
        self.metadata = metadata

    def base_url(self, deployment) -> str:
        return (deployment.api_base or self.default_base or "").rstrip("/")

    def url(self, deployment, path: str) -> str:
        return f"{self.base_url(deployment)}/{path}"

    def auth_headers(self, deployment) -> dict:
        return {"Authorization": f"Bearer {deployment.api_key}"} if deployment.api_key else {}

    def build_request(self, deployment, body: dict, path: str = "chat/completions") -> HttpCall:
        """The upstream call for `body`; pure."""
        return HttpCall(
            url=self.url(deployment, path),
            headers=self.auth_headers(deployment),
            json={**self.accepted_params(deployment, body), "model": deployment.model},
        )

    def accepted_params(self, deployment, body: dict) -> dict:
        """The body without proxy-only fields and, under `drop_params`, what the provider rejects."""
        payload = {k: v for k, v in body.items() if k not in PROXY_ONLY and (self.metadata or k != "metadata")}
        unsupported = sorted(key for key in payload if key in self.rejects)
        if unsupported and not deployment.drop_params:
            raise UnsupportedParams(
                f"{deployment.provider} does not support parameters: {unsupported}, for model={deployment.model}. "
                "To drop these, set `drop_params: true` in litellm_settings or the deployment's litellm_params."
            )
        return {k: v for k, v in payload.items() if k not in self.rejects}

    def parse_response(self, deployment, data: dict, raw: bytes | None = None, path: str = "chat/completions") -> Reply:
        """The reply for the client: the upstream's body unchanged, with its usage read."""
        usage = usage_from_responses(data) if path == RESPONSES else usage_from_openai(data)
        return Reply(body=data, usage=usage, raw=raw)

    def complete(self, http: Upstreams, deployment, body: dict, path: str = "chat/completions") -> Reply:
        call = self.build_request(deployment, body, path)
        data, raw = send(http, call, deployment.timeout, label=label(deployment))
        return self.parse_response(deployment, data, raw, path)

    def stream(self, http: Upstreams, deployment, body: dict, path: str = "chat/completions") -> Stream:
        """Open the upstream stream, asking for usage so the call can be charged exactly (a Responses
        API stream always ends with it)."""
        if path == RESPONSES:
            call = self.build_request(deployment, {**body, "stream": True}, path)
            return responses_stream(open_stream(http, call, deployment.timeout, label=label(deployment)))
        options = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
        payload = {**body, "stream": True, "stream_options": {**options, "include_usage": True}}
        call = self.build_request(deployment, payload, path)
        response = open_stream(http, call, deployment.timeout, label=label(deployment))
        return openai_stream(response, wants_usage(body))


class OllamaAdapter(OpenAIAdapter):
    """Ollama serves the OpenAI API under `/v1` of its base (`http://localhost:11434`)."""

    def base_url(self, deployment) -> str:
        base = super().base_url(deployment)
        return base if base.endswith("/v1") else f"{base}/v1"
