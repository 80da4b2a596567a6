"""The APIs a deployment can be asked for, named by their path under the deployment's base URL."""

from __future__ import annotations

CHAT = "chat/completions"
EMBEDDINGS = "embeddings"
COMPLETIONS = "completions"  # legacy text completions
RESPONSES = "responses"  # the OpenAI Responses API

NAMES = {
    CHAT: "chat completions",
    EMBEDDINGS: "embeddings",
    COMPLETIONS: "text completions (/v1/completions)",
    RESPONSES: "the Responses API (/v1/responses)",
}
ALL = frozenset(NAMES)
