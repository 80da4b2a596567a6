"""Typed fields of the admin request bodies. Each reader returns the value or raises a 400 naming
the field; money becomes exact pico-dollars; nothing is written until a whole body has been read.
"""

from __future__ import annotations

import math
from datetime import UTC
from decimal import Decimal
from typing import Any

from errors import BadRequest
from spend import periods
from spend.attribution import coerce_customer_id
from spend.money import to_units, usd

REGIONS = ("eu", "us")
# Bounds no operator reaches legitimately, so every stored value can be summed, compared and shown.
MAX_USD = 10**15
MAX_LIMIT = 2**53  # the largest whole number every JSON client reads exactly
# Budget fields, as clients send them → the budget column they set.
BUDGET_FIELDS = {
    "max_budget": "max_budget_units",
    "soft_budget": "soft_budget_units",
    "tpm_limit": "tpm_limit",
    "rpm_limit": "rpm_limit",
    "model_max_budget": "model_max_budget",
    "budget_duration": "budget_duration",
    "budget_reset_at": "budget_reset_at",
}


def money(value: Any, field: str) -> int | None:
    """A non-negative finite USD amount → pico-dollars."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{field} must be a number, got {value!r}", param=field)
    if not math.isfinite(value) or value < 0:
        raise BadRequest(f"{field} must be a non-negative finite number. Received: {value}", param=field)
    if value > MAX_USD:
        raise BadRequest(f"{field} must be at most {MAX_USD:,} USD (10^15). Received: {value}", param=field)
    return to_units(Decimal(repr(value)) if isinstance(value, float) else Decimal(value))


def whole(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"{field} must be a whole number >= 0, got {value!r}", param=field)
    if value > MAX_LIMIT:
        raise BadRequest(f"{field} must be at most {MAX_LIMIT:,} (2^53), got {value}", param=field)
    return value


def duration(value: Any, field: str = "budget_duration") -> str | None:
    if value is None:
        return None
    try:
        periods.parse_duration(value)
    except ValueError as exc:
        raise BadRequest(str(exc), param=field) from None
    return value.strip()


def moment(value: Any, field: str) -> str | None:
    """An ISO-8601 time between year 1 and 9998 in UTC, so the reset after it is a computable date."""
    if value is None:
        return None
    try:
        parsed = periods.from_iso(value).astimezone(UTC) if isinstance(value, str) else None
    except (ValueError, OverflowError):
        parsed = None
    if parsed is None or parsed.year > periods.LAST_YEAR:
        raise BadRequest(
            f"{field} must be an ISO-8601 time between the years 1 and {periods.LAST_YEAR} (UTC) "
            f"such as 2026-12-01T00:00:00Z, got {value!r}",
            param=field,
        )
    return periods.to_iso(parsed)


def is_text(value: Any) -> bool:
    """A string any database can store and match: no NUL character (PostgreSQL text has none)."""
    return isinstance(value, str) and "\x00" not in value


def text(value: Any, field: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{field} must be a string, got {value!r}", param=field)
    if value is not None and "\x00" in value:
        raise BadRequest(f"{field} must not contain NUL characters", param=field)
    return value


def boolean(value: Any, field: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"{field} must be true or false, got {value!r}", param=field)
    return value


def string_list(value: Any, field: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(is_text(item) for item in value):
        raise BadRequest(f"{field} must be a list of strings without NUL characters", param=field)
    return value


def region(value: Any) -> str | None:
    if value is not None and value not in REGIONS:
        raise BadRequest(
            f"allowed_model_region must be one of {', '.join(REGIONS)}, got {value!r}", param="allowed_model_region"
        )
    return value


def customer_id(value: Any, field: str = "user_id") -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{field} is required and must be a string", param=field)
    user_id = coerce_customer_id(value, field)
    if user_id is None:
        raise BadRequest(f"{field} is required and must not be empty", param=field)
    return user_id


def user_ids(body: dict) -> list[str]:
    """`user_ids`: a non-empty list of customer ids, duplicates removed, order kept."""
    value = body.get("user_ids")
    if not isinstance(value, list) or not value:
        raise BadRequest(
            f"user_ids is required: a non-empty list of customer ids, passed user_ids={value!r}", param="user_ids"
        )
    return list(dict.fromkeys(customer_id(item, "user_ids") for item in value))


def model_max_budget(value: Any) -> dict | None:
    """`{"<model>": {"max_budget": x, "budget_duration": "1d"}}` → the stored form (pico-dollars)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest(
            "model_max_budget must map model names to {max_budget, budget_duration}", param="model_max_budget"
        )
    stored = {}
    for model, entry in value.items():
        field = f"model_max_budget.{model}"
        if not isinstance(entry, dict) or entry.get("max_budget") is None:
            raise BadRequest(f"{field} must be an object with max_budget", param="model_max_budget")
        stored[model] = {
            "max_budget_units": money(entry.get("max_budget"), f"{field}.max_budget"),
            "budget_duration": duration(entry.get("budget_duration"), f"{field}.budget_duration"),
        }
    return stored


def show_model_max_budget(stored: dict | None) -> dict | None:
    """The stored form back to what clients sent."""
    if stored is None:
        return None
    return {
        model: {"max_budget": usd(entry["max_budget_units"]), "budget_duration": entry.get("budget_duration")}
        for model, entry in stored.items()
    }


_READERS = {
    "max_budget": money,
    "soft_budget": money,
    "tpm_limit": whole,
    "rpm_limit": whole,
    "budget_duration": duration,
    "budget_reset_at": moment,
}


def budget_columns(body: dict, *, nulls_clear: bool) -> dict:
    """The budget columns a body sets. A null leaves a column alone, or clears it with `nulls_clear`."""
    columns = {}
    for name, column in BUDGET_FIELDS.items():
        if name not in body or (body[name] is None and not nulls_clear):
            continue
        if name == "model_max_budget":
            columns[column] = model_max_budget(body[name])
        else:
            columns[column] = _READERS[name](body[name], name)
    return columns
