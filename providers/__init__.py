"""The provider registry: the `<provider>/` prefix of `litellm_params.model` → how to call it.

Each `ProviderSpec` names its adapter, the environment variable LiteLLM reads its key from,
its public default `api_base`, and its id in the pricing library (`genai-prices`).
"""

from __future__ import annotations

from dataclasses import dataclass

from providers.anthropic import AnthropicAdapter
from providers.apis import ALL as ALL_ROUTES
from providers.apis import CHAT, COMPLETIONS, EMBEDDINGS
from providers.azure import AzureAdapter
from providers.mock import MockAdapter
from providers.openai import OllamaAdapter, OpenAIAdapter


@dataclass(frozen=True)
class ProviderSpec:
    adapter: object
    key_env: str | None = None
    pricing_id: str | None = None
    needs_base: bool = False
    routes: frozenset[str] = ALL_ROUTES  # the APIs its deployments serve; others answer 400 before any upstream


# Parameters these providers document as unsupported (logprobs and logit bias).
_NO_LOGPROBS = frozenset({"logit_bias", "logprobs", "top_logprobs"})
# Mistral and DeepSeek have neither the Responses API nor legacy completions; Groq has no legacy completions.
_CHAT_AND_EMBEDDINGS = frozenset({CHAT, EMBEDDINGS})
_NO_COMPLETIONS = ALL_ROUTES - {COMPLETIONS}


def _openai_compatible(
    base: str | None,
    key_env: str | None,
    pricing_id: str | None,
    rejects: frozenset[str] = frozenset(),
    routes: frozenset[str] = ALL_ROUTES,
) -> ProviderSpec:
    return ProviderSpec(OpenAIAdapter(base, rejects), key_env, pricing_id, needs_base=base is None, routes=routes)


PROVIDERS: dict[str, ProviderSpec] = {
    "mock": ProviderSpec(MockAdapter()),
    "openai": ProviderSpec(OpenAIAdapter("https://api.openai.com/v1", metadata=True), "OPENAI_API_KEY", "openai"),
    "azure": ProviderSpec(AzureAdapter(), "AZURE_API_KEY", "azure", needs_base=True),
    "anthropic": ProviderSpec(AnthropicAdapter(), "ANTHROPIC_API_KEY", "anthropic", routes=frozenset({CHAT})),
    "mistral": _openai_compatible(
        "https://api.mistral.ai/v1", "MISTRAL_API_KEY", "mistral", _NO_LOGPROBS, _CHAT_AND_EMBEDDINGS
    ),
    "groq": _openai_compatible("https://api.groq.com/openai/v1", "GROQ_API_KEY", "groq", _NO_LOGPROBS, _NO_COMPLETIONS),
    "deepseek": _openai_compatible(
        "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", "deepseek", routes=_CHAT_AND_EMBEDDINGS
    ),
    "together_ai": _openai_compatible("https://api.together.xyz/v1", "TOGETHERAI_API_KEY", "together"),
    "fireworks_ai": _openai_compatible("https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY", "fireworks"),
    "openrouter": _openai_compatible("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", "openrouter"),
    "hosted_vllm": _openai_compatible(None, "HOSTED_VLLM_API_KEY", None),
    "ollama": ProviderSpec(OllamaAdapter("http://localhost:11434"), None, None),
    "ollama_chat": ProviderSpec(OllamaAdapter("http://localhost:11434"), None, None),
}
# Each provider's name in the pricing library (genai-prices), handed to `spend.pricing`.
PRICING_IDS: dict[str, str | None] = {name: spec.pricing_id for name, spec in PROVIDERS.items()}
# The public endpoints by provider: a deployment naming one as its `api_base` is that provider's.
PUBLIC_BASES: dict[str, str] = {
    name: spec.adapter.default_base
    for name, spec in PROVIDERS.items()
    if spec.key_env and getattr(spec.adapter, "default_base", None)
}

# Providers LiteLLM knows that Tollgate does not serve yet: their deployments are skipped with
# a warning instead of failing the whole config.
UNSUPPORTED_PROVIDERS = frozenset(
    {
        "bedrock",
        "bedrock_converse",
        "vertex_ai",
        "vertex_ai_beta",
        "gemini",
        "cohere",
        "cohere_chat",
        "huggingface",
        "replicate",
        "sagemaker",
        "sagemaker_chat",
        "watsonx",
        "databricks",
        "cloudflare",
        "ai21",
        "azure_ai",
        "xai",
        "perplexity",
        "cerebras",
        "deepinfra",
        "nvidia_nim",
        "lm_studio",
        "text-completion-openai",
    }
)
