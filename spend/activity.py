"""The daily rollup: every call, served, failed or refused, summed per UTC day, customer and model.

`roll_up` adds a call to its row inside the transaction that writes the call's spend-log row, so
the rollup and the spend log never disagree, and reading a month of activity reads a few rows per
customer and day instead of every call (`GET /customer/daily/activity`, `POST
/global/spend/end_users`, the dashboard's chart). It is the last statement of that transaction:
on PostgreSQL a busy customer's row is locked only from there to the commit. Calls charged to
nobody are kept under the customer id "" (NULL would make every such call a row of its own).
Rows are never deleted: spend-log retention leaves these sums alone.

The SQL is one text for both engines (see `spend.store.Database`); money only through
`units_add` and `units_sum`.
"""

from __future__ import annotations

from collections.abc import Sequence

from spend.store import ActivityFilter, CallRecord, Cursor, CustomerSpend, DailyActivity, Database, iso_timestamp

NOBODY = ""  # the customer id of calls charged to nobody
_SUMS = ("prompt_tokens", "completion_tokens", "cache_read_tokens", "cache_creation_tokens", "api_requests",
         "successful_requests", "failed_requests")  # fmt: skip
_ROLL_UP = (
    "INSERT INTO daily_activity (day, customer_id, model_group, provider_model, spend_units, "
    f"{', '.join(_SUMS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?) "
    "ON CONFLICT (day, customer_id, model_group, provider_model) DO UPDATE SET "
    "spend_units = units_add(daily_activity.spend_units, excluded.spend_units), "
    + ", ".join(f"{column} = daily_activity.{column} + excluded.{column}" for column in _SUMS)
)
_SUMMED = "units_sum(spend_units), " + ", ".join(f"SUM({column})" for column in _SUMS)


def roll_up(tx: Cursor, db: Database, record: CallRecord) -> None:
    """Add one call (its spend when it was charged, its tokens, whether it succeeded) to its day's row."""
    usage, served = record.usage, record.status == "success"
    tx.execute(
        _ROLL_UP,
        (
            iso_timestamp(record.ended_at)[:10],
            NOBODY if record.customer_id is None else record.customer_id,
            record.model_group,
            record.provider_model,
            db.units(record.cost_units if served else 0),
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_tokens,
            usage.cache_creation_tokens,
            int(served),
            int(not served),
        ),
    )


def daily_activity(db: Database, where: ActivityFilter) -> list[DailyActivity]:
    """The rollup rows matching `where`, newest day first, with each customer's alias."""
    clause, params = _where(where)
    sql = (
        "SELECT day, customer_id, model_group, provider_model, spend_units, "
        f"{', '.join(_SUMS)}, customers.alias FROM daily_activity "
        f"LEFT JOIN customers ON customers.user_id = daily_activity.customer_id{clause} "
        "ORDER BY day DESC, customer_id, model_group, provider_model"
    )
    rows = db.read(lambda tx: tx.execute(sql, params).fetchall())
    return [_row(row[:4], row[4:12], alias=row[12]) for row in rows]


def daily_by_customer(db: Database, where: ActivityFilter) -> list[DailyActivity]:
    """The rows matching `where` summed per day and customer (models ""), with the alias; newest first."""
    clause, params = _where(where)
    sql = (
        f"SELECT day, customer_id, {_SUMMED}, MAX(customers.alias) FROM daily_activity "
        f"LEFT JOIN customers ON customers.user_id = daily_activity.customer_id{clause} "
        "GROUP BY day, customer_id ORDER BY day DESC, customer_id"
    )
    rows = db.read(lambda tx: tx.execute(sql, params).fetchall())
    return [_row((row[0], row[1], "", ""), row[2:10], alias=row[10]) for row in rows]


def daily_by_model(db: Database, where: ActivityFilter) -> list[DailyActivity]:
    """The rows matching `where` summed per day and model (customer None); newest first."""
    clause, params = _where(where)
    sql = (
        f"SELECT day, model_group, provider_model, {_SUMMED} FROM daily_activity{clause} "
        "GROUP BY day, model_group, provider_model ORDER BY day DESC, model_group, provider_model"
    )
    rows = db.read(lambda tx: tx.execute(sql, params).fetchall())
    return [_row((row[0], NOBODY, row[1], row[2]), row[3:]) for row in rows]


def daily_totals(db: Database, where: ActivityFilter) -> list[DailyActivity]:
    """One row per day with activity matching `where`, newest first."""
    clause, params = _where(where)
    sql = f"SELECT day, {_SUMMED} FROM daily_activity{clause} GROUP BY day ORDER BY day DESC"
    rows = db.read(lambda tx: tx.execute(sql, params).fetchall())
    return [_row((row[0], None, "", ""), row[1:]) for row in rows]


def top_customers(db: Database, start_day: str, end_day: str, limit: int) -> list[CustomerSpend]:
    """The customers with the most spend over the days, most first (ties by id).

    The database orders by the spend as a double (both engines compare a NUMERIC or decimal text
    that way), exact up to $9,007 and within one part in 10**16 beyond; the page is then ordered
    again on the exact sums.
    """
    sql = (
        "SELECT customer_id, SUM(api_requests), units_sum(spend_units) AS spend FROM daily_activity "
        "WHERE day >= ? AND day <= ? AND customer_id <> ? GROUP BY customer_id "
        "ORDER BY CAST(units_sum(spend_units) AS DOUBLE PRECISION) DESC, customer_id LIMIT ?"
    )
    rows = db.read(lambda tx: tx.execute(sql, (start_day, end_day, NOBODY, limit)).fetchall())
    found = [CustomerSpend(customer, int(calls), int(spend)) for customer, calls, spend in rows]
    return sorted(found, key=lambda row: (-row.spend_units, row.customer_id))


def _where(where: ActivityFilter) -> tuple[str, tuple]:
    conditions, params = ["day >= ?", "day <= ?"], [where.start_day, where.end_day]
    if where.customer_ids is not None:
        conditions.append(_in("customer_id", where.customer_ids))
        params += where.customer_ids
    if where.exclude:
        conditions.append(f"NOT {_in('customer_id', where.exclude)}")
        params += where.exclude
    if where.model is not None:
        conditions.append("(model_group = ? OR provider_model = ?)")
        params += [where.model, where.model]
    return " WHERE " + " AND ".join(conditions), tuple(params)


def _in(column: str, values: Sequence[str]) -> str:
    """`column IN (?, …)`; an empty list matches nothing."""
    if not values:
        return "1 = 0"
    return f"{column} IN ({', '.join('?' for _ in values)})"


def _row(keys: tuple, sums: tuple, alias: str | None = None) -> DailyActivity:
    day, customer_id, model_group, provider_model = keys
    counts = [int(value or 0) for value in sums[1:]]
    return DailyActivity(
        day,
        None if customer_id == NOBODY else customer_id,
        model_group,
        provider_model,
        int(sums[0] or 0),
        *counts,
        alias=alias,
    )
