"""`GET /spend/logs`: one row per call, filtered and paginated, as JSON or CSV (SPEC §8).

Filters: `request_id` (Tollgate's call id, `x-litellm-call-id`, or the upstream's response id:
`chatcmpl-…`, `resp_…`, `msg_…`), `end_user` (or `customer_id`), `model` (model group or provider
model), `start_date`, `end_date` (`YYYY-MM-DD`, both days included, or ISO-8601 times, the end
excluded). Pages:
`page` (from 1) and `page_size` (default 100; at most 1,000 for JSON, 10,000 for CSV). The total
matching is in the `x-total-count` header. CSV with `?format=csv` or `Accept: text/csv`.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, time, timedelta

from flask import Blueprint, Response, jsonify, request

import gateway as gateway_state
from errors import BadRequest
from routes import page_arg, text_arg
from spend import periods
from spend.money import usd, usd_text
from spend.store import SpendLogFilter, SpendLogRow

blueprint = Blueprint("spend_logs", __name__)
DEFAULT_PAGE_SIZE = 100
COLUMNS = (
    "request_id", "response_id", "end_user", "model_group", "model", "model_id", "status", "spend", "prompt_tokens",
    "completion_tokens", "total_tokens", "cached_tokens", "cache_creation_tokens", "reasoning_tokens",
    "estimated", "priced", "error", "latency_ms", "startTime", "endTime",
)  # fmt: skip


@blueprint.get("/spend/logs")
def spend_logs():
    as_csv = request.args.get("format") == "csv" or request.accept_mimetypes.best == "text/csv"
    where = SpendLogFilter(
        request_id=text_arg("request_id"),
        customer_id=text_arg("end_user", "customer_id"),
        model=text_arg("model"),
        since=_bound("start_date", end=False),
        until=_bound("end_date", end=True),
    )
    page = page_arg("page", 1, None)
    page_size = page_arg("page_size", DEFAULT_PAGE_SIZE, 10_000 if as_csv else 1_000)
    ledger = gateway_state.current().store.ledger
    rows = ledger.spend_logs(where=where, limit=page_size, offset=(page - 1) * page_size)
    total = ledger.count_spend_logs(where)
    response = _csv(rows) if as_csv else jsonify([_json_row(row) for row in rows])
    response.headers["x-total-count"] = str(total)
    return response


def _bound(name: str, *, end: bool) -> str | None:
    """A date bound as ISO text in UTC: a whole day (the end day included), or an exact time; both
    between the years 1 and 9998, so the day after an end day is still a date."""
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        if len(raw) == 10:
            moment = datetime.combine(date.fromisoformat(raw), time(), UTC)
        else:
            moment = periods.from_iso(raw).astimezone(UTC)
    except (ValueError, OverflowError):
        moment = None
    if moment is None or moment.year > periods.LAST_YEAR:
        raise BadRequest(
            f"{name} must be YYYY-MM-DD or an ISO-8601 time between the years 1 and {periods.LAST_YEAR}, got {raw!r}",
            param=name,
        )
    if len(raw) == 10 and end:
        moment += timedelta(days=1)
    # isoformat pads every year to four digits; strftime("%Y") does not on every platform.
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _values(row: SpendLogRow) -> dict:
    return {
        "request_id": row.request_id,
        "response_id": row.response_id,
        "end_user": row.customer_id,
        "model_group": row.model_group,
        "model": row.provider_model,
        "model_id": row.deployment_id,
        "status": row.status,
        "spend": row.cost_units,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "total_tokens": row.prompt_tokens + row.completion_tokens,
        "cached_tokens": row.cached_tokens,
        "cache_creation_tokens": row.cache_creation_tokens,
        "reasoning_tokens": row.reasoning_tokens,
        "estimated": row.estimated,
        "priced": row.priced,
        "error": row.error,
        "latency_ms": row.latency_ms,
        "startTime": row.started_at,
        "endTime": row.created_at,
    }


def _json_row(row: SpendLogRow) -> dict:
    values = _values(row)
    values["spend"] = usd(row.cost_units)
    return values


def _csv(rows: list[SpendLogRow]) -> Response:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        values = _values(row)
        values["spend"] = usd_text(row.cost_units)
        writer.writerow(values)
    return Response(buffer.getvalue(), mimetype="text/csv")
