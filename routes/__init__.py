"""One Blueprint per surface: `llm` (chat, models), `customers`, `health`."""

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
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"Request body must be a JSON object, not a JSON {type(body).__name__}")
    return body
