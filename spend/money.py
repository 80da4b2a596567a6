"""Money: integer pico-dollars inside, one exact decimal outside.

Every amount is an integer number of pico-dollars (1 USD = 10**12 units) from the price to the
database: sums are exact, so a customer's spend is exactly the sum of its calls. Wherever money
leaves the process (JSON bodies, headers, CSV cells, log fields, webhook payloads, metrics) it
is written by `usd_text`: the exact amount in USD, in plain notation (no exponent, no binary
noise, no trailing zeros), of any size. In JSON it is that same text as a number (`usd`), never a
float in between: `1234567.000000000001` stays `1234567.000000000001`.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from simplejson import RawJSON

UNITS_PER_USD = 10**12


def to_units(amount: Decimal) -> int:
    """An exact USD amount → whole pico-dollars (half-even)."""
    return int((amount * UNITS_PER_USD).to_integral_value(rounding=ROUND_HALF_EVEN))


def usd_text(units: int) -> str:
    """Pico-dollars → the exact USD amount as plain decimal text: `0.0000105`, `3`, `-0.5`."""
    whole, fraction = divmod(abs(units), UNITS_PER_USD)
    sign = "-" if units < 0 else ""
    return f"{sign}{whole}.{fraction:012d}".rstrip("0") if fraction else f"{sign}{whole}"


def usd(units: int) -> RawJSON:
    """Pico-dollars → the JSON number of `usd_text` (written as is by `plain_json`)."""
    return RawJSON(usd_text(units))


def usd_or_none(units: int | None) -> RawJSON | None:
    return None if units is None else usd(units)
