"""One Blueprint per surface: `llm` (chat, models), `customers`, `budgets`, `spend_logs`, `health`.

This module holds what every surface reads the same way: the JSON body and paging parameters.
"""

from __future__ import annotations

import json

from flask import request

from errors import BadRequest


def json_body() -> dict:
    """The request body as a JSON object; a 400 for anything else."""
    raw = request.get_data(cache=False)
    if not raw.strip():
        raise BadRequest("Request body is empty: send a JSON object")
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"Request body must be a JSON object, not a JSON {type(body).__name__}")
    return body


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def text_arg(name: str, *aliases: str) -> str | None:
    """A text query parameter (or the first of its `aliases` that is set); None when absent or
    empty; a 400 when it holds a NUL character, which no database can match."""
    raw = next((request.args.get(key) for key in (name, *aliases) if request.args.get(key)), None)
    if raw is not None and "\x00" in raw:
        raise BadRequest(f"{name} must not contain NUL characters", param=name)
    return raw or None


def page_arg(name: str, default: int, maximum: int | None) -> int:
    """A whole-number query parameter within [1, maximum]; a 400 naming it otherwise."""
    raw = request.args.get(name)
    if raw is None:
        return default
    value = int(raw) if raw.strip().isdigit() else 0
    if value < 1 or (maximum is not None and value > maximum):
        limit = f"between 1 and {maximum}" if maximum else "at least 1"
        raise BadRequest(f"{name} must be a whole number {limit}, got {raw!r}", param=name)
    return value
