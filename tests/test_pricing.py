"""Exact money: per-token prices in Decimal, costs in integer pico-dollars (SPEC §6)."""

from __future__ import annotations

from decimal import Decimal, localcontext

import genai_prices
import pytest

import plain_json
from config import Deployment, Prices
from providers import PRICING_IDS
from providers.base import Usage
from spend.money import to_units, usd, usd_text
from spend.pricing import custom_cost, pricer_for

D = Decimal


@pytest.mark.parametrize(
    ("usage", "prices", "expected"),
    [
        (Usage(20, 20), Prices(D("0.001"), D("0.002")), D("0.06")),
        (Usage(1000, 0), Prices(D("0.0000005"), D("0.0000015")), D("0.0005")),
        # OpenAI: cached tokens are inside prompt_tokens and billed at the cache-read price only.
        (Usage(1000, 100, cached_tokens=800), Prices(D("0.000002"), D("0.000008"), D("0.0000005")), D("0.0016")),
        # Without a cache price, cached tokens cost the input price (never more, never twice).
        (Usage(1000, 0, cached_tokens=800), Prices(D("0.000002"), D("0.000008")), D("0.002")),
        # Cache writes at their own price.
        (
            Usage(300, 0, cache_creation_tokens=100),
            Prices(D("0.000003"), D(0), cache_write=D("0.00000375")),
            D("0.000975"),
        ),
        # Reasoning tokens are part of completion tokens: not added again.
        (Usage(0, 500, reasoning_tokens=400), Prices(D(0), D("0.00001")), D("0.005")),
        (Usage(0, 0), Prices(D("0.001"), D("0.002")), D(0)),
    ],
)
def test_custom_cost(usage, prices, expected):
    assert custom_cost(usage, prices) == expected


@pytest.mark.parametrize(
    ("amount", "units"),
    [
        (D("0.06"), 60_000_000_000),
        (D("0.000000000001"), 1),
        (D("0.0000000000004"), 0),
        (D("0.0000000000005"), 0),
        (D("0.0000000000015"), 2),
        (D("1234.5"), 1_234_500_000_000_000),
    ],
)
def test_to_units_rounds_half_even_to_a_pico_dollar(amount, units):
    assert to_units(amount) == units


@pytest.mark.parametrize(
    ("units", "text"),
    [
        (60_000_000_000, "0.06"),
        (40_000_000, "0.00004"),
        (1, "0.000000000001"),
        (0, "0"),
        (3 * 10**12, "3"),
        (1_112_000_000, "0.001112"),
    ],
)
def test_usd_text_is_a_plain_decimal(units, text):
    assert usd_text(units) == text
    assert plain_json.dumps({"spend": usd(units)}) == f'{{"spend":{text}}}'


@pytest.mark.parametrize("units", [10**12 * 1234567 + 1, 10**40 + 7, -(10**20) - 1])
def test_money_of_any_size_leaves_as_the_exact_decimal(units):
    text = plain_json.dumps([usd(units)])
    with localcontext(prec=100):
        assert Decimal(text[1:-1]) * 10**12 == units and "e" not in text.lower()


def test_sum_of_many_small_costs_is_exact():
    units = sum(to_units(custom_cost(Usage(7, 3), Prices(D("0.0000011"), D("0.0000033")))) for _ in range(100_000))
    assert usd_text(units) == "1.76"


def deployment(**fields) -> Deployment:
    defaults = {"id": "d", "model_name": "m", "provider": "openai", "model": "gpt-4o-mini"}
    return Deployment(**{**defaults, **fields})


def test_custom_prices_win_over_the_library():
    pricer = pricer_for(deployment(prices=Prices(D("0.001"), D("0.002"))), PRICING_IDS)
    assert pricer.cost(Usage(20, 20)) == to_units(D("0.06"))


def test_library_price_by_provider_and_model():
    pricer = pricer_for(deployment(), PRICING_IDS)
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1000, cache_read_tokens=200, output_tokens=50),
        "gpt-4o-mini",
        provider_id="openai",
    ).total_price
    assert pricer.priced
    assert pricer.cost(Usage(1000, 50, cached_tokens=200)) == to_units(expected)


def test_azure_deployment_is_priced_through_base_model():
    unnamed = pricer_for(deployment(provider="azure", model="my-deployment"), PRICING_IDS)
    named = pricer_for(deployment(provider="azure", model="my-deployment", base_model="azure/gpt-4o-mini"), PRICING_IDS)
    assert not unnamed.priced
    assert named.priced and named.cost(Usage(1000, 1000)) > 0


@pytest.mark.parametrize(
    ("fields", "fixed"),
    [
        ({"prices": Prices(D("0.001"), D("0.002"))}, True),  # custom prices
        ({}, True),  # gpt-4o-mini: one library price
        ({"provider": "anthropic", "model": "claude-sonnet-4-6"}, False),  # library prices by start date
    ],
)
def test_what_a_million_output_tokens_cost_is_worked_out_once_only_when_it_cannot_change(fields, fixed):
    pricer = pricer_for(deployment(**fields), PRICING_IDS)
    per_million = pricer.cost(Usage(completion_tokens=1_000_000))
    assert per_million > 0
    assert pricer.per_million_output() == per_million
    assert pricer.fixed_per_million_output == (per_million if fixed else None)


def test_unknown_model_is_unpriced_and_costs_nothing():
    pricer = pricer_for(deployment(provider="hosted_vllm", model="my-finetune"), PRICING_IDS)
    assert not pricer.priced
    assert pricer.cost(Usage(1000, 1000)) == 0
