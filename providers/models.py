"""Model names as LiteLLM resolves them: the provider of a bare model name, and wildcard deployments.

A `litellm_params.model` without a `<provider>/` prefix (`gpt-4o-mini`, `claude-3-5-sonnet-…`,
`mistral-small-latest`) gets the provider LiteLLM would give it: the provider whose public
`api_base` the deployment names, else the one the pricing library (genai-prices) knows the model
by, else `openai`, flagged as a guess so the config can warn about it.

A `model_name` with `*` is a wildcard (`*`, `anthropic/*`, `my-team/*`): it serves any requested
model it matches, and the `*`s of its `model` template (`openai/*`, `anthropic/*`, or `*` alone)
take what the request's `*`s matched, as LiteLLM's pattern router does. The most specific pattern
wins (longest first); a model not matched as written is tried again as `<its provider>/<model>`,
so `anthropic/*` also serves a request for plain `claude-…`.
"""

from __future__ import annotations

import difflib
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import genai_prices

from providers import PROVIDERS, PUBLIC_BASES, UNSUPPORTED_PROVIDERS

# LiteLLM's name for each pricing-library provider it knows (the library says `together`,
# LiteLLM `together_ai`; a bare `gemini-…` is `vertex_ai` to LiteLLM).
LIBRARY_PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "mistral": "mistral",
    "groq": "groq",
    "deepseek": "deepseek",
    "together": "together_ai",
    "fireworks": "fireworks_ai",
    "openrouter": "openrouter",
    "google": "vertex_ai",
    "aws": "bedrock",
    "cohere": "cohere",
    "x-ai": "xai",
    "perplexity": "perplexity",
    "cerebras": "cerebras",
    "cloudflare": "cloudflare",
    "databricks": "databricks",
}
# Where a model the library does not match by name is looked for, in this order.
SEARCH_ORDER = ("openai", "anthropic", "mistral", "groq", "deepseek", "together", "fireworks", "openrouter")


@dataclass(frozen=True)
class Inferred:
    """The provider LiteLLM would use for a bare model name; `guessed` when nothing knew it."""

    provider: str
    guessed: bool = False


def infer_provider(model: str, api_base: str | None = None, bases: dict[str, str] | None = None) -> Inferred:
    """The provider of a model named without a provider prefix.

    `bases` maps provider names to their public default `api_base`: a deployment that names one
    of them is that provider's, as LiteLLM reads `api_base`.
    """
    host = urlsplit(api_base).netloc.lower() if api_base else ""
    for provider, base in (bases or {}).items():
        if host and host == urlsplit(base).netloc.lower():
            return Inferred(provider)
    if model.startswith("ft:gpt"):  # OpenAI fine-tunes
        return Inferred("openai")
    found = _library_provider(model)
    if found is not None:
        return Inferred(LIBRARY_PROVIDERS.get(found, found))
    return Inferred("openai", guessed=True)


@lru_cache(maxsize=4096)
def _library_provider(model: str) -> str | None:
    """The pricing library's provider for `model`: by its name patterns, else by its model lists.
    Remembered: wildcard deployments ask again for every call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        usage = genai_prices.Usage(input_tokens=1)
        try:
            return genai_prices.calc_price(usage, model).provider.id
        except LookupError:
            pass
        for provider_id in SEARCH_ORDER:
            try:
                return genai_prices.calc_price(usage, model, provider_id=provider_id).provider.id
            except LookupError:
                continue
    return None


def is_wildcard(model_name: str) -> bool:
    return "*" in model_name


@dataclass(frozen=True)
class Target:
    """What a deployment's `litellm_params.model` names: `provider` (None when the deployment is not
    served, "" when a wildcard picks it per call) and `model`, with the `error` or `warning` to report."""

    provider: str | None = None
    model: str = ""
    error: str | None = None
    warning: str | None = None


def read_target(target: object, wildcard: bool, api_base: str | None = None) -> Target:
    """Read a `litellm_params.model` as LiteLLM reads it: `<provider>/<model>` when the prefix names
    a provider, else a bare model name whose provider is inferred."""
    if not isinstance(target, str) or not target.strip():
        return Target(error=f"must be '<provider>/<model>' or a model name, got {target!r}")
    target = target.strip()
    if "*" in target and not wildcard:
        return Target(error=f"a '*' in model needs a wildcard model_name (a '*' in it too), got {target!r}")
    prefix, slash, rest = target.partition("/")
    if slash and prefix in PROVIDERS:
        return Target(prefix, rest)
    if slash and prefix in UNSUPPORTED_PROVIDERS:
        return Target(warning=f"provider '{prefix}' is not supported by Tollgate; deployment skipped")
    if "*" in (prefix if slash else target):
        return Target("", target)
    if slash:
        likely = difflib.get_close_matches(prefix, sorted(PROVIDERS), n=1, cutoff=0.6)
        hint = f"; did you mean '{likely[0]}'?" if likely else ""
        return Target(error=f"unknown provider '{prefix}' (supported: {', '.join(sorted(PROVIDERS))}){hint}")
    inferred = infer_provider(target, api_base, PUBLIC_BASES)
    if inferred.provider not in PROVIDERS:
        return Target(
            warning=f"LiteLLM sends '{target}' to provider '{inferred.provider}', which Tollgate does not serve; "
            "deployment skipped"
        )
    if inferred.guessed:
        return Target(
            inferred.provider,
            target,
            warning=f"no provider is known for '{target}'; served as openai/{target} (an OpenAI-compatible API), "
            "as LiteLLM does. Write '<provider>/<model>' to say which",
        )
    return Target(inferred.provider, target)


@dataclass(frozen=True)
class Pattern:
    """A wildcard `model_name`, compiled as LiteLLM compiles it: each `*` captures any text."""

    text: str

    @property
    def regex(self) -> re.Pattern:
        return re.compile(re.escape(self.text).replace(r"\*", "(.*)") + r"\Z", re.DOTALL)

    @property
    def specificity(self) -> tuple[int, int]:
        """LiteLLM's order: longer patterns first, then those with more wildcards."""
        return len(self.text), self.text.count("*")

    def match(self, requested: str) -> tuple[str, ...] | None:
        """What each `*` matched in `requested`, or None when it does not match."""
        found = self.regex.match(requested)
        return found.groups() if found else None


def fill(template: str, captured: tuple[str, ...], requested: str) -> str:
    """A deployment's `model` template with its `*`s replaced by what the pattern captured, in order.

    A template without `*` stays as it is (every match goes to that one model); one with fewer `*`s
    than the pattern captured falls back to the requested name, as LiteLLM does.
    """
    if "*" not in template:
        return template
    if len(captured) > template.count("*"):
        return requested
    for segment in captured:
        template = template.replace("*", segment, 1)
    return template
