"""The ledger role (`spend.store.Ledger`), written once for every engine's `Database`.

Admission and settlement each run in one write transaction. Where writers run at once
(PostgreSQL, any number of boxes) both first lock the customer's row, so a customer's admissions
and settlements take turns while other customers' go ahead; SQLite has one writer at a time
anyway. Inside the lock the decision is `spend.budgets.plan_admission`, and the reservation is
still one conditional UPDATE that refuses to pass the limit.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import replace

from spend import activity, budgets, idempotency
from spend.budgets import Account, OverBudget, OverRate, Plan, RateUsage
from spend.outbox import add_events
from spend.store import (
    PLAIN_CALL,
    ActivityFilter,
    AdmissionRequest,
    CallRecord,
    Charge,
    Conflict,
    Cursor,
    CustomerSpend,
    DailyActivity,
    Database,
    IdempotencyClaim,
    Replay,
    Settlement,
    SpendLogFilter,
    SpendLogRow,
    holder_of,
    iso_timestamp,
)

_LOG_COLUMNS = (
    "request_id, customer_id, model_group, provider_model, deployment_id, prompt_tokens, completion_tokens, "
    "cached_tokens, cache_creation_tokens, reasoning_tokens, cost_units, priced, estimated, status, error, "
    "latency_ms, started_at, created_at, attempts, response_id"
)
_CHARGE = (
    "INSERT INTO spend_accounts (user_id, scope, spend_units, period_end) VALUES (:user, :scope, :cost, :end) "
    "ON CONFLICT (user_id, scope) DO UPDATE SET spend_units = CASE "
    "WHEN spend_accounts.period_end IS NOT NULL AND spend_accounts.period_end <= :now THEN excluded.spend_units "
    "ELSE units_add(spend_accounts.spend_units, excluded.spend_units) END, period_end = excluded.period_end, "
    "reserved_units = units_add(spend_accounts.reserved_units, :released) RETURNING spend_units"
)
# The spend in the account's window: nothing once the window has ended.
_WINDOW_SPEND = "CASE WHEN period_end IS NOT NULL AND period_end <= :now THEN '0' ELSE spend_units END"
_RESERVE = (
    f"UPDATE spend_accounts SET spend_units = {_WINDOW_SPEND}, period_end = :window_end, "
    "reserved_units = units_add(reserved_units, :units) "
    f"WHERE user_id = :user AND scope = :scope AND units_le(units_add(units_add({_WINDOW_SPEND}, reserved_units), "
    ":units), :max)"
)


class SQLLedger:
    def __init__(self, db: Database):
        self.db = db

    def admit(self, request: AdmissionRequest) -> Plan | OverBudget | OverRate:
        return self.db.write(lambda tx: self._admit(tx, request))

    def record_call(self, record: CallRecord, settlement: Settlement = PLAIN_CALL) -> None:
        self.db.write(lambda tx: self._record_call(tx, record, settlement))

    def record_refusal(self, record: CallRecord) -> None:
        def write(tx: Cursor) -> None:
            self._insert_spend_log(tx, record)
            activity.roll_up(tx, self.db, record)

        self.db.write(write)

    # -- admission -----------------------------------------------------------------------

    def _admit(self, tx: Cursor, request: AdmissionRequest) -> Plan | OverBudget | OverRate:
        """Create the customer if unseen, lock it, then reserve or refuse, inside one transaction."""
        customer, now = request.customer_id, request.now
        scopes = list(dict.fromkeys(limit.scope for limit in request.limits))
        self._ensure_customer(tx, customer, now, lock=True)
        accounts = self._accounts(tx, customer, scopes) if scopes else {}
        for scope in scopes:  # an account is made on its first limited call (the lock keeps others out)
            if scope not in accounts:
                tx.execute(
                    "INSERT INTO spend_accounts (user_id, scope) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (customer, scope),
                )
                accounts[scope] = Account()
        if any(account.reserved_units for account in accounts.values()):
            for scope, units in self._release_expired(tx, customer, now):
                if scope in accounts:
                    held = accounts[scope]
                    accounts[scope] = replace(held, reserved_units=held.reserved_units - units)
            for (scope,) in tx.execute(
                "SELECT DISTINCT scope FROM reservations WHERE user_id = ? AND capped", (customer,)
            ).fetchall():
                if scope in accounts:
                    accounts[scope] = replace(accounts[scope], capped_in_flight=True)
        if request.rate_limits is not None:
            over_rate = budgets.check_rate(request.rate_limits, self._rate_usage(tx, customer, now), now)
            if over_rate is not None:
                return over_rate
        pairs = [(limit, accounts.get(limit.scope, Account())) for limit in request.limits]
        decision = budgets.plan_admission(pairs, request.estimate, strict=request.strict, now=now)
        if isinstance(decision, OverBudget):
            return decision
        for limit in request.limits:
            self._reserve(tx, request, limit, decision.reservations[limit.scope], limit.scope in decision.capped)
        if request.rate_limits is not None:
            inserted = tx.execute(
                "INSERT INTO rate_events (request_id, user_id, at) VALUES (?, ?, ?) "
                "ON CONFLICT (request_id) DO NOTHING",
                (request.request_id, customer, now),
            )
            if inserted.rowcount != 1:
                raise Conflict(request.request_id)
        return decision

    def _ensure_customer(self, tx: Cursor, user_id: str, now: float, *, lock: bool, create: bool = True) -> None:
        """The customer exists (created on first sight, unless not `create`), and with `lock`,
        where writers run at once, this transaction holds the customer's lock until it ends."""
        locking = lock and self.db.locks_rows
        lock_row = "SELECT 1 FROM customers WHERE user_id = ? FOR UPDATE"
        if locking and tx.execute(lock_row, (user_id,)).fetchone() is not None:
            return  # a known customer: one statement
        if create:
            stamp = iso_timestamp(now)
            tx.execute(
                "INSERT INTO customers (user_id, created_at, updated_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (user_id, stamp, stamp),
            )
        if locking:
            tx.execute(lock_row, (user_id,))

    def _accounts(self, tx: Cursor, user_id: str, scopes: list[str]) -> dict[str, Account]:
        marks = ", ".join("?" for _ in scopes)
        rows = tx.execute(
            f"SELECT scope, spend_units, reserved_units, period_end FROM spend_accounts "
            f"WHERE user_id = ? AND scope IN ({marks})",
            (user_id, *scopes),
        ).fetchall()
        return {scope: Account(int(spend), int(reserved), period_end) for scope, spend, reserved, period_end in rows}

    def _release_expired(self, tx: Cursor, user_id: str, now: float) -> list[tuple[str, int]]:
        """Give back what calls reserved and never settled (their worker died mid-call); (scope, units) each."""
        expired = tx.execute(
            "DELETE FROM reservations WHERE user_id = ? AND expires_at <= ? RETURNING scope, units", (user_id, now)
        ).fetchall()
        expired = [(scope, int(units)) for scope, units in expired]
        self._unreserve(tx, user_id, expired)
        return expired

    def _unreserve(self, tx: Cursor, user_id: str, rows: list[tuple[str, int]]) -> None:
        for scope, units in rows:
            tx.execute(
                "UPDATE spend_accounts SET reserved_units = units_add(reserved_units, ?) "
                "WHERE user_id = ? AND scope = ?",
                (self.db.units(-units), user_id, scope),
            )

    def _rate_usage(self, tx: Cursor, user_id: str, now: float) -> RateUsage:
        since = now - budgets.RATE_WINDOW_SECONDS
        tx.execute("DELETE FROM rate_events WHERE user_id = ? AND at <= ?", (user_id, since))
        count, tokens, oldest = tx.execute(
            "SELECT COUNT(*), COALESCE(SUM(tokens), 0), MIN(at) FROM rate_events WHERE user_id = ?", (user_id,)
        ).fetchone()
        return RateUsage(int(count), int(tokens), oldest)

    def _reserve(self, tx: Cursor, request: AdmissionRequest, limit, units: int, capped: bool) -> None:
        """Add the reservation; the statement itself refuses to pass the limit (belt and braces)."""
        cursor = tx.execute(
            _RESERVE,
            {
                "now": request.now,
                "window_end": limit.window_end,
                "units": self.db.units(units),
                "user": request.customer_id,
                "scope": limit.scope,
                "max": self.db.units(limit.max_units),
            },
        )
        if cursor.rowcount != 1:
            raise RuntimeError(f"reservation for {request.customer_id!r} would pass its budget")
        inserted = tx.execute(
            "INSERT INTO reservations (request_id, user_id, scope, units, expires_at, capped, holder) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_id, scope) DO NOTHING",
            (
                request.request_id,
                request.customer_id,
                limit.scope,
                self.db.units(units),
                request.expires_at,
                capped,
                holder_of(os.getpid()),
            ),  # fmt: skip
        )
        if inserted.rowcount != 1:
            raise Conflict(request.request_id)  # a call in flight has this id (a client's x-request-id)

    # -- settlement ----------------------------------------------------------------------

    def _record_call(self, tx: Cursor, record: CallRecord, settlement: Settlement) -> None:
        """Release, charge, announce and log one call, inside one transaction.

        The reservation is given back in the same statement that adds the cost to its account.
        """
        customer, now = record.customer_id, record.ended_at
        charged = customer is not None and record.status == "success"
        if customer is not None and (charged or settlement.reserved):
            # A call reserved under the customer's lock is settled under it too.
            self._ensure_customer(tx, customer, now, lock=settlement.reserved, create=charged)
        holder, released = self._release(tx, record.request_id) if settlement.reserved else (None, {})
        if charged:
            spend = {}
            for charge in settlement.charges:
                freed = released.pop(charge.scope, 0) if holder == customer else 0
                spend[charge.scope] = self._charge(tx, customer, charge, record.cost_units, now, freed)
            events = list(settlement.events)
            if settlement.on_spend is not None:
                events += settlement.on_spend(spend[""])
            if events:
                add_events(tx, events, now)
        if released:
            self._unreserve(tx, holder, list(released.items()))
        if settlement.idempotency is not None:
            idempotency.finish(tx, self.db, settlement, record)
        if settlement.rate_tracked:
            tx.execute(
                "UPDATE rate_events SET tokens = ? WHERE request_id = ?", (record.usage.total_tokens, record.request_id)
            )
        self._insert_spend_log(tx, record)
        activity.roll_up(tx, self.db, record)  # last: a shared day row stays locked only until the commit

    def release_held_by(self, holder: str) -> int:
        """Give back every reservation a worker process that is gone held (`holder_of` its pid):
        its calls died with it. The number of reservations released."""

        def write(tx: Cursor) -> int:
            rows = tx.execute(
                "DELETE FROM reservations WHERE holder = ? RETURNING user_id, scope, units", (holder,)
            ).fetchall()
            held: dict[str, list[tuple[str, int]]] = {}
            for user_id, scope, units in rows:
                held.setdefault(user_id, []).append((scope, int(units)))
            for user_id in sorted(held):  # one order, so two releases never wait on each other
                self._unreserve(tx, user_id, held[user_id])
            return len(rows)

        return self.db.write(write)

    def _release(self, tx: Cursor, request_id: str) -> tuple[str | None, dict[str, int]]:
        """Delete a call's reservations: whose they were, and the units they held by scope."""
        rows = tx.execute(
            "DELETE FROM reservations WHERE request_id = ? RETURNING user_id, scope, units", (request_id,)
        ).fetchall()
        return (rows[0][0] if rows else None), {scope: int(units) for _, scope, units in rows}

    def _charge(self, tx: Cursor, user_id: str, charge: Charge, cost_units: int, now: float, released: int) -> int:
        """Add a call's cost to one account (starting a new window if the last one ended) and give
        back the `released` units its reservation held; the new spend."""
        params = {
            "user": user_id,
            "scope": charge.scope,
            "cost": self.db.units(cost_units),
            "end": charge.window_end,
            "released": self.db.units(-released),
            "now": now,
        }
        return int(tx.execute(_CHARGE, params).fetchone()[0])

    def _insert_spend_log(self, tx: Cursor, record: CallRecord) -> None:
        """The call's row. Its id is the client's `x-request-id` when it sent a new one; should an
        earlier row have that id after all (two calls sent it at once), the row is kept under the
        id with a suffix: a call the upstream has answered is always charged."""
        request_id = record.request_id
        while not self._try_spend_log(tx, record, request_id):
            request_id = f"{record.request_id}.{uuid.uuid4().hex[:8]}"

    def _try_spend_log(self, tx: Cursor, record: CallRecord, request_id: str) -> bool:
        usage = record.usage
        return (
            1
            == tx.execute(
                f"INSERT INTO spend_logs ({_LOG_COLUMNS}) VALUES ({', '.join('?' * 20)}) "
                "ON CONFLICT (request_id) DO NOTHING",
                (
                    request_id,
                    record.customer_id,
                    record.model_group,
                    record.provider_model,
                    record.deployment_id,
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    usage.cached_tokens,
                    usage.cache_creation_tokens,
                    usage.reasoning_tokens,
                    self.db.units(record.cost_units),
                    record.priced,
                    record.estimated,
                    record.status,
                    record.error,
                    record.latency_ms,
                    iso_timestamp(record.started_at),
                    iso_timestamp(record.ended_at),
                    record.attempts,
                    record.response_id,
                ),
            ).rowcount
        )

    # -- idempotency (spend.idempotency) -------------------------------------------------

    def claim_idempotency(self, claim: IdempotencyClaim, request_id: str, now: float, hold: float) -> Replay | None:
        return idempotency.take(self.db, claim, request_id, now, hold)

    def drop_idempotency(self, claim: IdempotencyClaim, request_id: str) -> None:
        idempotency.free(self.db, claim, request_id)

    # -- the spend log -------------------------------------------------------------------

    def spend_logs(
        self, customer_id: str | None = None, limit: int = 1000, *, where: SpendLogFilter | None = None, offset: int = 0
    ) -> list[SpendLogRow]:
        clause, params = _log_filter(where or SpendLogFilter(customer_id=customer_id))
        sql = f"SELECT {_LOG_COLUMNS} FROM spend_logs{clause} ORDER BY created_at DESC, request_id LIMIT ? OFFSET ?"
        rows = self.db.read(lambda tx: tx.execute(sql, (*params, limit, offset)).fetchall())
        return [_log_row(row) for row in rows]

    def count_spend_logs(self, where: SpendLogFilter) -> int:
        clause, params = _log_filter(where)
        return int(
            self.db.read(lambda tx: tx.execute(f"SELECT COUNT(*) FROM spend_logs{clause}", params).fetchone()[0])
        )

    def delete_spend_logs_before(self, cutoff: float, batch: int) -> int:
        # The index on created_at finds the rows; finding none takes no write lock. Where writers
        # run at once (PostgreSQL), each skips the rows another is deleting.
        old = "SELECT request_id FROM spend_logs WHERE created_at < :cutoff"
        params = {"cutoff": iso_timestamp(cutoff), "batch": batch}
        if self.db.read(lambda tx: tx.execute(f"{old} LIMIT 1", params).fetchone()) is None:
            return 0
        delete = f"DELETE FROM spend_logs WHERE request_id IN ({old} LIMIT :batch{self.db.skip_locked})"
        return self.db.write(lambda tx: tx.execute(delete, params).rowcount)

    # -- the daily rollup (spend.activity) -----------------------------------------------

    def daily_activity(
        self,
        customer_ids: Sequence[str] | None,
        start_day: str,
        end_day: str,
        model: str | None = None,
        *,
        exclude: Sequence[str] = (),
    ) -> list[DailyActivity]:
        ids = None if customer_ids is None else tuple(customer_ids)
        return activity.daily_activity(self.db, ActivityFilter(start_day, end_day, ids, model, tuple(exclude)))

    def daily_totals(self, where: ActivityFilter) -> list[DailyActivity]:
        return activity.daily_totals(self.db, where)

    def daily_breakdown(self, where: ActivityFilter, by: str) -> list[DailyActivity]:
        if by not in ("customer", "model"):
            raise ValueError(f"daily_breakdown by 'customer' or 'model', not {by!r}")
        reader = activity.daily_by_customer if by == "customer" else activity.daily_by_model
        return reader(self.db, where)

    def top_customers(self, start_day: str, end_day: str, limit: int) -> list[CustomerSpend]:
        return activity.top_customers(self.db, start_day, end_day, limit)


def _log_filter(where: SpendLogFilter) -> tuple[str, tuple]:
    conditions, params = [], []
    if where.request_id is not None:
        conditions.append("(request_id = ? OR response_id = ?)")
        params += [where.request_id, where.request_id]
    if where.customer_id is not None:
        conditions.append("customer_id = ?")
        params.append(where.customer_id)
    if where.model is not None:
        conditions.append("(model_group = ? OR provider_model = ?)")
        params += [where.model, where.model]
    if where.since is not None:
        conditions.append("created_at >= ?")
        params.append(where.since)
    if where.until is not None:
        conditions.append("created_at < ?")
        params.append(where.until)
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), tuple(params)


def _log_row(row: tuple) -> SpendLogRow:
    values = list(row)
    values[10], values[11], values[12] = int(values[10]), bool(values[11]), bool(values[12])
    return SpendLogRow(*values)
