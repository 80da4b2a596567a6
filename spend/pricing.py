"""What a call costs, exactly. Pure: no Flask, no SQL.

Money is integer pico-dollars (`spend.money`): every per-token price in use is a whole number
of pico-dollars or finer, and a call's cost is computed in `Decimal` and rounded once,
half-even, to a unit.

Prices come from the deployment's custom prices (`litellm_params`, then `model_info`), else from
the `genai-prices` library, looked up by provider and model (or `model_info.base_model`). Which
library provider each of Tollgate's providers is (`pricing_ids`) is handed in: the money core
imports no provider registry.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal

import genai_prices

from config import Deployment, Prices
from providers.base import Usage
from spend.money import to_units

log = logging.getLogger("tollgate")

MILLION = 1_000_000


def custom_cost(usage: Usage, prices: Prices) -> Decimal:
    """Cost under custom per-token prices; cached tokens never billed twice."""
    cache_read = prices.cache_read if prices.cache_read is not None else prices.input
    cache_write = prices.cache_write if prices.cache_write is not None else prices.input
    uncached = max(usage.prompt_tokens - usage.cached_tokens - usage.cache_creation_tokens, 0)
    return (
        uncached * prices.input
        + usage.cached_tokens * cache_read
        + usage.cache_creation_tokens * cache_write
        + usage.completion_tokens * prices.output
    )


@dataclass(frozen=True)
class Pricer:
    """Prices one deployment. `priced` is False when neither custom nor library prices exist."""

    deployment_id: str
    custom: Prices | None = None
    library_ref: str | None = None
    library_provider: str | None = None
    context_window: int | None = None
    # What a million output tokens cost, worked out once when it cannot change (custom prices, or
    # one unconditional library price): every call's admission asks (`per_million_output`).
    fixed_per_million_output: int | None = None

    @property
    def priced(self) -> bool:
        return self.custom is not None or self.library_ref is not None

    def per_million_output(self) -> int:
        """What a million output tokens (and nothing else) cost now, in pico-dollars."""
        if self.fixed_per_million_output is not None:
            return self.fixed_per_million_output
        return self.cost(Usage(completion_tokens=MILLION))

    def cost(self, usage: Usage) -> int:
        """This call's cost in pico-dollars (0 when unpriced)."""
        if self.custom is not None:
            return to_units(custom_cost(usage, self.custom))
        if self.library_ref is None:
            return 0
        calculation = genai_prices.calc_price(
            _library_usage(usage), self.library_ref, provider_id=self.library_provider
        )
        return to_units(calculation.total_price)


def pricer_for(deployment: Deployment, pricing_ids: Mapping[str, str | None]) -> Pricer:
    """Resolve where a deployment's prices come from, once, at start-up. `pricing_ids` maps
    Tollgate's provider names to the pricing library's (`providers.PRICING_IDS`)."""
    if deployment.prices is not None:
        pricer = Pricer(deployment.id, custom=deployment.prices)
        return replace(pricer, fixed_per_million_output=pricer.per_million_output())
    ref, provider_id = _library_name(deployment, pricing_ids)
    try:
        found = genai_prices.calc_price(_library_usage(Usage(prompt_tokens=1)), ref, provider_id=provider_id)
    except LookupError:
        return Pricer(deployment.id)
    pricer = Pricer(
        deployment.id, library_ref=ref, library_provider=provider_id, context_window=found.model.context_window
    )
    if isinstance(found.model.prices, genai_prices.types.ModelPrice):  # not a list of prices by date or time
        pricer = replace(pricer, fixed_per_million_output=pricer.per_million_output())
    return pricer


def _library_name(deployment: Deployment, pricing_ids: Mapping[str, str | None]) -> tuple[str, str | None]:
    """The (model, provider id) to look up: `base_model` when set, else the provider model."""
    if deployment.base_model:
        prefix, _, rest = deployment.base_model.partition("/")
        if rest and prefix in pricing_ids:
            return rest, pricing_ids[prefix]
        return deployment.base_model, pricing_ids.get(deployment.provider)
    return deployment.model, pricing_ids.get(deployment.provider)


def _library_usage(usage: Usage) -> genai_prices.Usage:
    # genai-prices counts cached and cache-written tokens inside input_tokens, as we do.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return genai_prices.Usage(
            input_tokens=usage.prompt_tokens,
            cache_read_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_creation_tokens,
            output_tokens=usage.completion_tokens,
        )
