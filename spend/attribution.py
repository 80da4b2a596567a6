"""Who a call is charged to (SPEC §5). Pure: headers and body in, a customer id or None out.

First match wins: header `x-litellm-customer-id`, header `x-litellm-end-user-id`, the headers the
config names (`user_header_mappings` with role `customer`, then `user_header_name`), body `user`,
body `litellm_metadata.user`, body `metadata.user_id` (a dict, or a JSON string holding one), body
`safety_identifier` (the Responses API's and chat's newer name for the end user), as LiteLLM orders them.
Strings are stripped and an empty one means "no customer"; numbers become strings; booleans,
lists and objects are ignored. Ids over 256 characters or with control characters are refused.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Mapping
from typing import Any

from errors import BadRequest

MAX_CUSTOMER_ID_LENGTH = 256
HEADERS = ("x-litellm-customer-id", "x-litellm-end-user-id")


def resolve_customer_id(
    headers: Mapping[str, str], body: Mapping[str, Any], extra_headers: tuple[str, ...] = ()
) -> str | None:
    """The customer id named by the request, validated; None when it names nobody.
    `extra_headers` are the configured customer headers, read after LiteLLM's own two."""
    for name in (*HEADERS, *extra_headers):
        customer = coerce_customer_id(headers.get(name), name)
        if customer is not None:
            return customer
    candidates = (
        ("user", body.get("user")),
        ("litellm_metadata.user", _field(body.get("litellm_metadata"), "user")),
        ("metadata.user_id", _field(body.get("metadata"), "user_id")),
        ("safety_identifier", body.get("safety_identifier")),
    )
    for where, value in candidates:
        customer = coerce_customer_id(value, where)
        if customer is not None:
            return customer
    return None


def coerce_customer_id(value: Any, where: str = "user") -> str | None:
    """Apply the coercion rules to one candidate value; raise `BadRequest` for an unusable id."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        value = str(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = str(value)
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_CUSTOMER_ID_LENGTH:
        raise BadRequest(
            f"Invalid customer id in {where}: longer than {MAX_CUSTOMER_ID_LENGTH} characters", param=where
        )
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise BadRequest(f"Invalid customer id in {where}: contains control characters", param=where)
    return value


def _field(container: Any, key: str) -> Any:
    """`container[key]` where container is a dict or a JSON string holding one."""
    if isinstance(container, str):
        try:
            container = json.loads(container)
        except ValueError:
            return None
    return container.get(key) if isinstance(container, dict) else None
