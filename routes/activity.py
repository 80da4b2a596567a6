"""The operator's view of customers' activity, in LiteLLM's shapes, read from the daily rollup.

- `GET /customer/daily/activity` (also `/end_user/daily/activity`): per UTC day, the calls'
  spend, tokens and requests (successful and failed, refusals included), broken down by model,
  model group, provider and customer (`entities`): LiteLLM's `SpendAnalyticsPaginatedResponse`.
  A page is `page_size` days with activity, newest first; `metadata`'s totals cover every page.
- `POST /global/spend/end_users`: the 100 customers with the most spend over some days.

Money is exact (`spend.money.usd`); a malformed date or a range that ends before it starts is a 400.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from flask import Blueprint, jsonify, request

import gateway as gateway_state
from errors import BadRequest
from routes import json_body, page_arg, text_arg
from spend import periods
from spend.money import usd
from spend.store import ActivityFilter, DailyActivity

blueprint = Blueprint("activity", __name__)
DEFAULT_PAGE_SIZE = 10  # days, as LiteLLM's default page
MAX_PAGE_SIZE = 1000
MAX_IDS = 1000
TOP_CUSTOMERS = 100
DEFAULT_DAYS = 30
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_EMPTY = ("api_keys", "endpoints", "mcp_servers")  # LiteLLM's breakdowns Tollgate has nothing for


@blueprint.get("/customer/daily/activity")
@blueprint.get("/end_user/daily/activity")
def daily_activity():
    """A page of days with activity, newest first: each day's totals (one query for every page's
    days, which also gives `metadata`), then the page's days summed per model and per customer."""
    start, end = _day_arg("start_date"), _day_arg("end_date")
    if end < start:
        raise BadRequest(f"end_date {end} is before start_date {start}", param="end_date")
    where = ActivityFilter(
        start, end, _ids_arg("end_user_ids"), text_arg("model"), _ids_arg("exclude_end_user_ids") or ()
    )
    page = page_arg("page", 1, None)
    page_size = page_arg("page_size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    ledger = gateway_state.current().store.ledger
    days = ledger.daily_totals(where)
    shown = days[(page - 1) * page_size : page * page_size]
    by_day = {total.day: ([], []) for total in shown}
    if shown:
        span = replace(where, start_day=shown[-1].day, end_day=shown[0].day)
        for index, by in enumerate(("model", "customer")):
            for row in ledger.daily_breakdown(span, by):
                by_day[row.day][index].append(row)
    results = [_day(total, *by_day[total.day]) for total in shown]
    return jsonify({"results": results, "metadata": _metadata(days, page, page_size)})


@blueprint.post("/global/spend/end_users")
def top_customers():
    """LiteLLM's top customers: `[{"end_user", "total_count", "total_spend"}]`, most spend first."""
    body = json_body() if request.content_length or request.headers.get("Transfer-Encoding") else {}
    now = datetime.fromtimestamp(gateway_state.current().clock(), UTC)
    start = _moment(body, "startTime") or now - timedelta(days=DEFAULT_DAYS)
    end = _moment(body, "endTime") or now
    if end < start:
        raise BadRequest("endTime is before startTime", param="endTime")
    found = gateway_state.current().store.ledger.top_customers(
        start.date().isoformat(), end.date().isoformat(), TOP_CUSTOMERS
    )
    return jsonify(
        [{"end_user": row.customer_id, "total_count": row.calls, "total_spend": usd(row.spend_units)} for row in found]
    )


def _day_arg(name: str) -> str:
    """A required `YYYY-MM-DD` query parameter (a UTC day), as that text."""
    raw = request.args.get(name)
    if not raw:
        raise BadRequest(f"{name} is required (YYYY-MM-DD)", param=name)
    try:
        day = date.fromisoformat(raw) if _DAY.fullmatch(raw) else None
    except ValueError:
        day = None
    if day is None:
        raise BadRequest(f"{name} must be a date as YYYY-MM-DD, got {raw!r}", param=name)
    return raw


def _ids_arg(name: str) -> tuple[str, ...] | None:
    """A comma-separated list of customer ids; None when absent."""
    raw = text_arg(name)
    if raw is None:
        return None
    ids = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    if len(ids) > MAX_IDS:
        raise BadRequest(f"{name} names more than {MAX_IDS} customers", param=name)
    return ids or None


def _moment(body: dict, name: str) -> datetime | None:
    """`startTime` / `endTime`: an ISO-8601 date or time (naive means UTC); None when absent."""
    raw = body.get(name)
    if raw is None:
        return None
    try:
        moment = periods.from_iso(raw) if isinstance(raw, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.year > periods.LAST_YEAR:
        raise BadRequest(f"{name} must be an ISO-8601 date or time, got {raw!r}", param=name)
    return moment.astimezone(UTC)


def _day(total: DailyActivity, models: list[DailyActivity], customers: list[DailyActivity]) -> dict:
    """One day of `results`: its metrics and breakdowns, from the day's sums per model and per customer."""
    sums = {kind: {} for kind in _BREAKDOWNS}
    for row in models:
        # A refused call has no deployment: it is in no model's entry, and under provider "unknown".
        for kind, key in (("models", row.provider_model), ("model_groups", row.model_group),
                          ("providers", row.provider or "unknown")):  # fmt: skip
            if key:
                held = sums[kind].get(key)
                values = _values(row)
                sums[kind][key] = values if held is None else [a + b for a, b in zip(held, values, strict=True)]
    breakdown = {
        kind: {key: {"metrics": _metrics(values), "metadata": {}} for key, values in entries.items()}
        for kind, entries in sums.items()
    }
    breakdown["entities"] = {  # calls charged to nobody are LiteLLM's "Unassigned" entity
        "Unassigned" if row.customer_id is None else row.customer_id: {
            "metrics": _metrics(_values(row)),
            "metadata": {} if row.customer_id is None else {"alias": row.alias},
        }
        for row in customers
    }
    return {"date": total.day, "metrics": _metrics(_values(total)), "breakdown": breakdown | {k: {} for k in _EMPTY}}


_BREAKDOWNS = ("models", "model_groups", "providers")
_FIELDS = ("spend_units", "prompt_tokens", "completion_tokens", "cache_read_tokens", "cache_creation_tokens",
           "api_requests", "successful_requests", "failed_requests")  # fmt: skip


def _values(row: DailyActivity) -> list[int]:
    return [getattr(row, name) for name in _FIELDS]


def _metrics(values: list[int]) -> dict:
    """LiteLLM's `SpendMetrics` of `_values`, spend as an exact JSON number."""
    spend, prompt, completion, cache_read, cache_creation, requests, successful, failed = values
    return {
        "spend": usd(spend),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_creation,
        "api_requests": requests,
        "successful_requests": successful,
        "failed_requests": failed,
    }


def _metadata(days: list[DailyActivity], page: int, page_size: int) -> dict:
    """LiteLLM's `DailySpendMetadata`: totals over every page, and where this page is."""
    totals = [sum(column) for column in zip(*(_values(day) for day in days), strict=True)] or [0] * len(_FIELDS)
    metrics = _metrics(totals)
    return {
        "total_spend": metrics["spend"],
        "total_prompt_tokens": metrics["prompt_tokens"],
        "total_completion_tokens": metrics["completion_tokens"],
        "total_tokens": metrics["total_tokens"],
        "total_api_requests": metrics["api_requests"],
        "total_successful_requests": metrics["successful_requests"],
        "total_failed_requests": metrics["failed_requests"],
        "total_cache_read_input_tokens": metrics["cache_read_input_tokens"],
        "total_cache_creation_input_tokens": metrics["cache_creation_input_tokens"],
        "page": page,
        "total_pages": math.ceil(len(days) / page_size),
        "has_more": page * page_size < len(days),
    }
