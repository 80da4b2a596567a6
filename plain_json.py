"""Flask's JSON output with floats written as plain decimals: 0.00004, never 4e-05.

Money reaches JSON as a float (see `spend.pricing.usd`), whose shortest repr is the exact decimal
the spend store holds. Python writes small floats with an exponent; clients parse both forms, but
operators read these numbers and compare them with invoices, so Tollgate writes them out in full.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

from flask.json.provider import DefaultJSONProvider


def plain_float(value: float) -> str:
    """The shortest round-trip digits of `value`, without an exponent."""
    if not math.isfinite(value):
        raise ValueError(f"JSON cannot carry {value!r}")
    return format(Decimal(repr(value)), "f")


class _PlainFloatEncoder(json.JSONEncoder):
    def iterencode(self, o: Any, _one_shot: bool = False):
        # The C encoder always uses float.__repr__; the pure-Python one takes a float formatter.
        markers: dict | None = {} if self.check_circular else None
        return json.encoder._make_iterencode(  # type: ignore[attr-defined]
            markers,
            self.default,
            json.encoder.py_encode_basestring if not self.ensure_ascii else json.encoder.py_encode_basestring_ascii,
            self.indent,
            plain_float,
            self.key_separator,
            self.item_separator,
            self.sort_keys,
            self.skipkeys,
            _one_shot,
        )(o, 0)


def dumps(obj: Any) -> str:
    """Compact JSON with plain-decimal floats, outside of a Flask app (webhook payloads)."""
    return json.dumps(obj, cls=_PlainFloatEncoder, ensure_ascii=False, separators=(",", ":"))


class PlainJSONProvider(DefaultJSONProvider):
    sort_keys = False
    ensure_ascii = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("default", self.default)
        kwargs.setdefault("ensure_ascii", self.ensure_ascii)
        kwargs.setdefault("sort_keys", self.sort_keys)
        kwargs.setdefault("separators", (",", ":"))
        return json.dumps(obj, cls=_PlainFloatEncoder, **kwargs)
