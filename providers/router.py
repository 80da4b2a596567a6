"""Which deployments serve a call, in which order: model groups by public name, wildcard
deployments, `rpm` weights, region filtering, and a short cooldown for a deployment that keeps failing.

A requested model is served by the group of that exact `model_name` when there is one; else by the
wildcard deployments of the most specific pattern that matches it (`providers.models`), each made
concrete for the call: the requested name in, the provider model the pattern's template makes out,
the provider picked per call where the template names none (`model: "*"`).

A call tries `candidates()[0]` first and, on a retryable failure, the next one (cycling when the
group is smaller than the retries allow). Failure counts and cooldowns live in each worker
process: a worker that saw a deployment fail three times in a row skips it for five seconds,
unless every deployment of the group is cooling down.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from config import Deployment
from errors import BadRequest
from providers import PROVIDERS, PUBLIC_BASES, UNSUPPORTED_PROVIDERS
from providers.models import Pattern, fill, infer_provider

ALLOWED_FAILS = 3
MAX_MODEL_NAME = 256
COOLDOWN_SECONDS = 5.0


class Router:
    def __init__(
        self,
        deployments: Iterable[Deployment],
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._groups: dict[str, list[Deployment]] = {}
        self._patterns: dict[str, list[Deployment]] = {}
        for deployment in deployments:
            named = self._patterns if deployment.wildcard else self._groups
            named.setdefault(deployment.model_name, []).append(deployment)
        self._by_specificity = sorted(self._patterns, key=lambda text: Pattern(text).specificity, reverse=True)
        self._rng = rng or random.Random()
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, int] = {}
        self._cooling_until: dict[str, float] = {}

    def model_names(self) -> list[str]:
        """The configured names: every `model_name`, wildcard patterns (`*`, `anthropic/*`) as written."""
        return [*self._groups, *self._patterns]

    def serves(self, model: object) -> bool:
        """Whether a call naming `model` would find deployments (by name or through a wildcard)."""
        try:
            self.group(model)
        except BadRequest:
            return False
        return True

    def group(self, model: object) -> list[Deployment]:
        """The deployments serving `model`; a 400 naming the configured models otherwise."""
        names = ", ".join(self.model_names())
        if model is None or model == "":
            raise BadRequest(f"No model given: pass `model` as one of: {names}", param="model")
        members = self._groups.get(model) if isinstance(model, str) else None
        if members is None and isinstance(model, str) and self._patterns:
            members = self._matched(model)
        if members is None:
            raise BadRequest(
                f"Invalid model name passed in model={model}. Configured models: {names}. "
                "Call `/v1/models` to view available models.",
                param="model",
            )
        return members

    def _matched(self, model: str) -> list[Deployment] | None:
        """The wildcard deployments for `model`, made concrete: the most specific pattern matching
        the name as written, else as `<provider>/<name>` (LiteLLM's order). A requested name goes
        upstream, into the spend log and into the log: it must be printable and of a sane length."""
        if len(model) > MAX_MODEL_NAME or not model.isprintable():
            raise BadRequest(f"`model` must be a printable name of at most {MAX_MODEL_NAME} characters", param="model")
        tries = [model]
        if "/" not in model:
            inferred = infer_provider(model)
            tries += [] if inferred.guessed else [f"{inferred.provider}/{model}"]
        for written in tries:
            for text in self._by_specificity:
                captured = Pattern(text).match(written)
                if captured is not None:
                    return [_concrete(d, model, captured, written) for d in self._patterns[text]]
        return None

    def candidates(self, model: object, region: str | None = None) -> list[Deployment]:
        """The group's deployments in the order to try them: weighted by `rpm`, cooling ones last."""
        members = self.group(model)
        if region is not None:
            members = [d for d in members if d.region_name == region]
            if not members:
                raise BadRequest(
                    f"No deployment of model '{model}' is in region '{region}', the only region this customer "
                    "may use (allowed_model_region)",
                    param="model",
                )
        now = self._clock()
        ready = [d for d in members if self._cooling_until.get(d.id, 0.0) <= now]
        cooling = [d for d in members if d not in ready]
        return self._weighted_order(ready) + self._weighted_order(cooling)

    def _weighted_order(self, members: list[Deployment]) -> list[Deployment]:
        remaining, order = list(members), []
        while remaining:
            chosen = self._rng.choices(remaining, weights=[d.rpm or 1 for d in remaining])[0]
            order.append(chosen)
            remaining.remove(chosen)
        return order

    def failed(self, deployment: Deployment) -> None:
        with self._lock:
            count = self._failures.get(deployment.id, 0) + 1
            if count >= ALLOWED_FAILS:
                self._cooling_until[deployment.id] = self._clock() + COOLDOWN_SECONDS
                count = 0
            self._failures[deployment.id] = count

    def succeeded(self, deployment: Deployment) -> None:
        if self._failures.get(deployment.id):
            with self._lock:
                self._failures[deployment.id] = 0


def _concrete(deployment: Deployment, requested: str, captured: tuple[str, ...], written: str) -> Deployment:
    """A wildcard deployment as it serves one requested model."""
    template = f"{deployment.provider}/{deployment.model}" if deployment.provider else deployment.model
    target = fill(template, captured, written)
    if deployment.provider:
        provider, model = deployment.provider, target.removeprefix(f"{deployment.provider}/")
    else:
        provider, model = _provider_of(target, deployment)
    key = deployment.api_key or dict(deployment.provider_keys).get(provider)
    return replace(deployment, model_name=requested, provider=provider, model=model, api_key=key, provider_keys=())


def _provider_of(target: str, deployment: Deployment) -> tuple[str, str]:
    """(provider, model) for a wildcard that names no provider: the target's prefix, else LiteLLM's inference."""
    prefix, slash, rest = target.partition("/")
    if slash and prefix in PROVIDERS:
        provider, model = prefix, rest
    elif slash and prefix in UNSUPPORTED_PROVIDERS:
        provider, model = prefix, rest
    else:
        provider, model = infer_provider(target, deployment.api_base, PUBLIC_BASES).provider, target
    spec = PROVIDERS.get(provider)
    if spec is None or provider == "mock":
        raise BadRequest(
            f"Model '{target}' would be sent to provider '{provider}', which this proxy does not serve", param="model"
        )
    if spec.needs_base and not deployment.api_base:
        raise BadRequest(
            f"Model '{target}' would be sent to provider '{provider}', which needs an api_base this "
            f"wildcard deployment does not set",
            param="model",
        )
    return provider, model
