"""One Blueprint per surface: `llm` (chat, models), `customers`, `budgets`, `spend_logs`, `health`.

This module holds what every surface reads the same way: the JSON body and paging parameters.
"""

from __future__ import annotations

import json
import math
import re

from flask import request

from errors import BadRequest

# Bounds no legitimate client reaches: deeper JSON would exhaust the parser's recursion, and a
# page past a billion would overflow the database's row offset.
MAX_JSON_DEPTH = 64
MAX_PAGE = 1_000_000_000
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_body() -> dict:
    """The request body as a JSON object of valid Unicode, nested at most 64 deep; a 400 for anything else."""
    raw = request.get_data(cache=False)
    if not raw.strip():
        raise BadRequest("Request body is empty: send a JSON object")
    try:
        body = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"Request body must be a JSON object, not a JSON {type(body).__name__}")
    _check_tree(body)
    return body


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is too large for a double-precision float")
    return value


def _check_tree(body: dict) -> None:
    """Walk the parsed body without recursion: nesting depth, and no lone UTF-16 surrogate (as in
    `"\\ud800"`), which no database or upstream can encode."""
    pending = [(body, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise _too_deep()
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            for text in (key, item):
                surrogate = _SURROGATE.search(text) if isinstance(text, str) else None
                if surrogate:
                    shown = ascii(surrogate.group())[1:-1]
                    raise BadRequest(
                        f"Request body holds a lone UTF-16 surrogate ({shown}), which is not valid Unicode"
                    )
            if isinstance(item, dict | list):
                pending.append((item, depth + 1))


def _too_deep() -> BadRequest:
    return BadRequest(f"Request body is nested too deeply: at most {MAX_JSON_DEPTH} levels of objects and arrays")


def text_arg(name: str, *aliases: str) -> str | None:
    """A text query parameter (or the first of its `aliases` that is set); None when absent or
    empty; a 400 when it holds a NUL character, which no database can match."""
    raw = next((request.args.get(key) for key in (name, *aliases) if request.args.get(key)), None)
    if raw is not None and "\x00" in raw:
        raise BadRequest(f"{name} must not contain NUL characters", param=name)
    return raw or None


def page_arg(name: str, default: int, maximum: int | None) -> int:
    """A whole-number query parameter within [1, maximum] (1 billion when None), in ASCII digits
    (`str.isdigit()` also takes "²" and "١"); a 400 naming it otherwise."""
    raw = request.args.get(name)
    if raw is None:
        return default
    maximum = maximum or MAX_PAGE
    digits = raw.strip()
    value = int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 10 else 0
    if value < 1 or value > maximum:
        limit = f"between 1 and {maximum}"
        raise BadRequest(f"{name} must be a whole number {limit}, got {raw!r}", param=name)
    return value
