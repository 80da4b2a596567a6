"""Azure OpenAI: the OpenAI adapter with a deployment URL, `api-version` and an `api-key` header.

The Responses API is not under the deployment's URL: Azure takes it at `{api_base}/openai/responses`
with the deployment named as `model` in the body, and only from api-version 2025-03-01-preview on.
"""

from __future__ import annotations

from dataclasses import replace

from providers.apis import RESPONSES
from providers.openai import OpenAIAdapter

DEFAULT_API_VERSION = "2024-10-21"
RESPONSES_API_VERSION = "2025-04-01-preview"


class AzureAdapter(OpenAIAdapter):
    def __init__(self):
        super().__init__(metadata=True)

    def url(self, deployment, path: str) -> str:
        if path == RESPONSES:
            return f"{self.base_url(deployment)}/openai/responses"
        return f"{self.base_url(deployment)}/openai/deployments/{deployment.model}/{path}"

    def auth_headers(self, deployment) -> dict:
        return {"api-key": deployment.api_key} if deployment.api_key else {}

    def build_request(self, deployment, body: dict, path: str = "chat/completions"):
        call = super().build_request(deployment, body, path)
        if path == RESPONSES:
            return replace(call, params={"api-version": deployment.api_version or RESPONSES_API_VERSION})
        # Azure names the model in the URL, so the body carries no `model`.
        payload = {key: value for key, value in call.json.items() if key != "model"}
        return replace(call, json=payload, params={"api-version": deployment.api_version or DEFAULT_API_VERSION})
