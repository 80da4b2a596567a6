"""Tollgate's JSON output: compact UTF-8, with money as exact plain-decimal numbers.

Money reaches JSON as `spend.money.usd(units)`, simplejson's `RawJSON` holding the exact amount
(`0.0000105`, `1234567.000000000001`), which simplejson writes into the output as it is: no float
in between, no exponent. The standard library's encoder can write a number only from an int or a
float, so Tollgate's output goes through simplejson (its C speedups, public API); input is still
parsed by Flask's default provider.
"""

from __future__ import annotations

from typing import Any

import simplejson
from flask.json.provider import DefaultJSONProvider


def dumps(obj: Any, default=None) -> str:
    """Compact JSON; NaN and infinities refused (JSON has none)."""
    return simplejson.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=default)


class PlainJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider with `dumps` above: keys in the order the code builds them."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return dumps(obj, default=kwargs.get("default", self.default))
