"""Azure OpenAI: the OpenAI adapter with a deployment URL, `api-version` and an `api-key` header."""

from __future__ import annotations

from dataclasses import replace

from providers.openai import OpenAIAdapter

DEFAULT_API_VERSION = "2024-10-21"


class AzureAdapter(OpenAIAdapter):
    def __init__(self):
        super().__init__(metadata=True)

    def url(self, deployment, path: str) -> str:
        return f"{self.base_url(deployment)}/openai/deployments/{deployment.model}/{path}"

    def auth_headers(self, deployment) -> dict:
        return {"api-key": deployment.api_key} if deployment.api_key else {}

    def build_request(self, deployment, body: dict, path: str = "chat/completions"):
        call = super().build_request(deployment, body, path)
        # Azure names the model in the URL, so the body carries no `model`.
        payload = {key: value for key, value in call.json.items() if key != "model"}
        return replace(call, json=payload, params={"api-version": deployment.api_version or DEFAULT_API_VERSION})
