"""The admin role (`spend.store.Admin`): what the `/customer/*` and `/budget/*` routes do, written
once for every engine's `Database`.

Every change is one transaction; a customer's private budget row carries `owner_user_id`, a
shared tier does not.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from spend import periods
from spend.store import (
    BUDGET_COLUMNS,
    Budget,
    Conflict,
    Cursor,
    Customer,
    DashboardSession,
    Database,
    Missing,
    iso_timestamp,
)

_CUSTOMER_SELECT = (
    "SELECT c.user_id, COALESCE(a.spend_units, 0), a.period_end, c.blocked, c.alias, c.allowed_model_region, "
    "c.default_model, c.models, b.budget_id, b.max_budget_units, b.soft_budget_units, b.tpm_limit, b.rpm_limit, "
    "b.model_max_budget, b.budget_duration, b.budget_reset_at, b.created_at, b.owner_user_id "
    "FROM customers c LEFT JOIN spend_accounts a ON a.user_id = c.user_id AND a.scope = '' "
    "LEFT JOIN budgets b ON b.budget_id = c.budget_id"
)
_BUDGET_SELECT = (
    "SELECT budget_id, max_budget_units, soft_budget_units, tpm_limit, rpm_limit, model_max_budget, "
    "budget_duration, budget_reset_at, created_at, owner_user_id FROM budgets"
)
_CUSTOMER_FIELDS = ("alias", "blocked", "allowed_model_region", "default_model", "models", "budget_id")


def read_customer(connection: Cursor, user_id: str) -> Customer | None:
    row = connection.execute(f"{_CUSTOMER_SELECT} WHERE c.user_id = ?", (user_id,)).fetchone()
    return _customer(row) if row else None


def _customer(row: tuple) -> Customer:
    budget = _budget(row[8:]) if row[8] is not None else None
    return Customer(
        user_id=row[0],
        spend_units=int(row[1]),
        spend_period_end=row[2],
        blocked=bool(row[3]),
        alias=row[4],
        allowed_model_region=row[5],
        default_model=row[6],
        models=tuple(json.loads(row[7] or "[]")),
        budget=budget,
    )


def _budget(row: tuple) -> Budget:
    return Budget(
        budget_id=row[0],
        max_budget_units=_units(row[1]),
        soft_budget_units=_units(row[2]),
        tpm_limit=row[3],
        rpm_limit=row[4],
        model_max_budget=json.loads(row[5]) if row[5] else None,
        budget_duration=row[6],
        budget_reset_at=row[7],
        created_at=row[8],
        owner_user_id=row[9],
    )


def _units(value) -> int | None:
    return None if value is None else int(value)


def with_reset(columns: dict, now: float, previous: Budget | None = None) -> dict:
    """Budget changes with `budget_reset_at` computed for a new or changed `budget_duration`.

    A `budget_reset_at` the caller sets itself is kept; clearing the duration clears it.
    """
    columns = dict(columns)
    if "budget_duration" in columns and "budget_reset_at" not in columns:
        duration = columns["budget_duration"]
        unchanged = previous is not None and previous.budget_duration == duration
        if duration is None:
            columns["budget_reset_at"] = None
        elif not unchanged:
            moment = periods.next_reset(periods.parse_duration(duration), datetime.fromtimestamp(now, UTC))
            columns["budget_reset_at"] = periods.to_iso(moment)
    return columns


class SQLAdmin:
    """Customer and budget CRUD on a `Database`."""

    def __init__(self, db: Database):
        self.db = db

    def _value(self, column: str, value):
        """A column's value as stored: JSON text for lists and maps, money as the engine keeps it."""
        if value is None:
            return None
        if column in ("model_max_budget", "models"):
            return json.dumps(value)
        if column.endswith("_units"):
            return self.db.units(value)
        return value

    # -- customers -----------------------------------------------------------------------

    def get_customer(self, user_id: str) -> Customer | None:
        return self.db.read(lambda tx: read_customer(tx, user_id))

    def create_customer(self, customer: Customer, budget: dict | None, now: float) -> Customer:
        stamp = iso_timestamp(now)

        def create(tx: Cursor) -> Customer:
            if tx.execute("SELECT 1 FROM customers WHERE user_id = ?", (customer.user_id,)).fetchone():
                raise Conflict(customer.user_id)
            budget_id = customer.budget.budget_id if customer.budget else None
            if budget_id is not None and not _budget_exists(tx, budget_id):
                raise Missing([budget_id])
            if budget is not None:
                budget_id = self._insert_budget(tx, str(uuid.uuid4()), with_reset(budget, now), stamp, customer.user_id)
            tx.execute(
                "INSERT INTO customers (user_id, alias, blocked, allowed_model_region, default_model, models, "
                "budget_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    customer.user_id,
                    customer.alias,
                    customer.blocked,
                    customer.allowed_model_region,
                    customer.default_model,
                    json.dumps(list(customer.models)),
                    budget_id,
                    stamp,
                    stamp,
                ),
            )
            tx.execute(
                "INSERT INTO spend_accounts (user_id, scope, spend_units) VALUES (?, '', ?)",
                (customer.user_id, self.db.units(customer.spend_units)),
            )
            return read_customer(tx, customer.user_id)

        return self.db.write(create)

    def update_customer(self, user_id: str, fields: dict, budget: dict, now: float) -> Customer:
        stamp = iso_timestamp(now)

        def update(tx: Cursor) -> Customer:
            current = read_customer(tx, user_id)
            if current is None:
                raise Missing([user_id])
            if fields.get("budget_id") is not None and not _budget_exists(tx, fields["budget_id"]):
                raise Missing([fields["budget_id"]])
            changes = dict(fields)
            if budget:
                changes["budget_id"] = self._own_budget(tx, current, budget, now, stamp)
            for column in _CUSTOMER_FIELDS:
                if column in changes:
                    tx.execute(
                        f"UPDATE customers SET {column} = ?, updated_at = ? WHERE user_id = ?",
                        (self._value(column, changes[column]), stamp, user_id),
                    )
            if "spend_units" in changes:
                tx.execute(
                    "UPDATE spend_accounts SET spend_units = ? WHERE user_id = ? AND scope = ''",
                    (self.db.units(changes["spend_units"]), user_id),
                )
            return read_customer(tx, user_id)

        return self.db.write(update)

    def delete_customers(self, user_ids: list[str]) -> int:
        def delete(tx: Cursor) -> int:
            missing = [uid for uid in user_ids if not _customer_exists(tx, uid)]
            if missing:
                raise Missing(missing)
            for user_id in user_ids:
                tx.execute("DELETE FROM reservations WHERE user_id = ?", (user_id,))
                tx.execute("DELETE FROM rate_events WHERE user_id = ?", (user_id,))
                tx.execute("DELETE FROM customers WHERE user_id = ?", (user_id,))
                tx.execute("DELETE FROM budgets WHERE owner_user_id = ?", (user_id,))
            return len(user_ids)

        return self.db.write(delete)

    def list_customers(self, offset: int, limit: int, search: str | None) -> tuple[list[Customer], int]:
        where, params = "", ()
        if search:
            pattern = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where = " WHERE lower(c.user_id) LIKE ? ESCAPE '\\' OR lower(COALESCE(c.alias, '')) LIKE ? ESCAPE '\\'"
            params = (pattern, pattern)

        def page(tx: Cursor) -> tuple[list[Customer], int]:
            total = tx.execute(f"SELECT COUNT(*) FROM customers c{where}", params).fetchone()[0]
            rows = tx.execute(
                f"{_CUSTOMER_SELECT}{where} ORDER BY c.user_id LIMIT ? OFFSET ?", (*params, limit, offset)
            ).fetchall()
            return [_customer(row) for row in rows], int(total)

        return self.db.read(page)

    def set_blocked(self, user_ids: list[str], blocked: bool, now: float) -> list[Customer]:
        stamp = iso_timestamp(now)

        def block(tx: Cursor) -> list[Customer]:
            if not blocked:
                missing = [uid for uid in user_ids if not _customer_exists(tx, uid)]
                if missing:
                    raise Missing(missing)
            for user_id in user_ids:
                tx.execute(
                    "INSERT INTO customers (user_id, blocked, created_at, updated_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (user_id) DO UPDATE SET blocked = excluded.blocked, updated_at = excluded.updated_at",
                    (user_id, blocked, stamp, stamp),
                )
                tx.execute(
                    "INSERT INTO spend_accounts (user_id, scope) VALUES (?, '') ON CONFLICT DO NOTHING", (user_id,)
                )
            return [read_customer(tx, user_id) for user_id in user_ids]

        return self.db.write(block)

    # -- budgets -------------------------------------------------------------------------

    def get_budget(self, budget_id: str) -> Budget | None:
        row = self.db.read(lambda tx: tx.execute(f"{_BUDGET_SELECT} WHERE budget_id = ?", (budget_id,)).fetchone())
        return _budget(row) if row else None

    def create_budget(self, budget_id: str, columns: dict, now: float) -> Budget:
        def create(tx: Cursor) -> None:
            if _budget_exists(tx, budget_id):
                raise Conflict(budget_id)
            self._insert_budget(tx, budget_id, with_reset(columns, now), iso_timestamp(now), None)

        self.db.write(create)
        return self.get_budget(budget_id)

    def update_budget(self, budget_id: str, columns: dict, now: float) -> Budget:
        def update(tx: Cursor) -> None:
            row = tx.execute(f"{_BUDGET_SELECT} WHERE budget_id = ?", (budget_id,)).fetchone()
            if row is None:
                raise Missing([budget_id])
            self._update_budget(tx, budget_id, with_reset(columns, now, _budget(row)), iso_timestamp(now))

        self.db.write(update)
        return self.get_budget(budget_id)

    def list_budgets(self, budget_ids: list[str] | None = None) -> list[Budget]:
        query, params = _BUDGET_SELECT, ()
        if budget_ids is not None:
            query += f" WHERE budget_id IN ({', '.join('?' for _ in budget_ids)})"
            params = tuple(budget_ids)
        rows = self.db.read(lambda tx: tx.execute(f"{query} ORDER BY created_at, budget_id", params).fetchall())
        return [_budget(row) for row in rows]

    def delete_budget(self, budget_id: str) -> Budget:
        def delete(tx: Cursor) -> Budget:
            row = tx.execute(f"{_BUDGET_SELECT} WHERE budget_id = ?", (budget_id,)).fetchone()
            if row is None:
                raise Missing([budget_id])
            tx.execute("UPDATE customers SET budget_id = NULL WHERE budget_id = ?", (budget_id,))
            tx.execute("DELETE FROM budgets WHERE budget_id = ?", (budget_id,))
            return _budget(row)

        return self.db.write(delete)

    def _own_budget(self, tx: Cursor, customer: Customer, changes: dict, now: float, stamp: str) -> str:
        """The id of the customer's private budget with `changes` applied; a shared tier is copied, not edited."""
        current = customer.budget
        if current is not None and current.owner_user_id == customer.user_id:
            self._update_budget(tx, current.budget_id, with_reset(changes, now, current), stamp)
            return current.budget_id
        base = {column: getattr(current, column) for column in BUDGET_COLUMNS} if current else {}
        merged = {**base, **with_reset(changes, now, current)}
        return self._insert_budget(tx, str(uuid.uuid4()), merged, stamp, customer.user_id)

    def _insert_budget(self, tx: Cursor, budget_id: str, columns: dict, stamp: str, owner: str | None) -> str:
        names = [column for column in BUDGET_COLUMNS if column in columns]
        tx.execute(
            f"INSERT INTO budgets (budget_id, {''.join(n + ', ' for n in names)}created_at, updated_at, owner_user_id) "
            f"VALUES (?, {''.join('?, ' for _ in names)}?, ?, ?)",
            (budget_id, *(self._value(n, columns[n]) for n in names), stamp, stamp, owner),
        )
        return budget_id

    def _update_budget(self, tx: Cursor, budget_id: str, columns: dict, stamp: str) -> None:
        for column in BUDGET_COLUMNS:
            if column in columns:
                tx.execute(
                    f"UPDATE budgets SET {column} = ?, updated_at = ? WHERE budget_id = ?",
                    (self._value(column, columns[column]), stamp, budget_id),
                )

    # -- the dashboard's sessions --------------------------------------------------------

    def open_session(self, session: DashboardSession, now: float) -> None:
        def write(tx: Cursor) -> None:
            tx.execute("DELETE FROM dashboard_sessions WHERE expires_at <= ?", (now,))
            tx.execute(
                "INSERT INTO dashboard_sessions (token_hash, csrf_token, key_hash, expires_at) VALUES (?, ?, ?, ?)",
                (session.token_hash, session.csrf_token, session.key_hash, session.expires_at),
            )

        self.db.write(write)

    def find_session(self, token_hash: str, now: float) -> DashboardSession | None:
        row = self.db.read(
            lambda tx: tx.execute(
                "SELECT token_hash, csrf_token, key_hash, expires_at FROM dashboard_sessions "
                "WHERE token_hash = ? AND expires_at > ?",
                (token_hash, now),
            ).fetchone()
        )
        return None if row is None else DashboardSession(*row)

    def close_session(self, token_hash: str) -> None:
        self.db.write(lambda tx: tx.execute("DELETE FROM dashboard_sessions WHERE token_hash = ?", (token_hash,)))


def _budget_exists(tx: Cursor, budget_id: str) -> bool:
    return tx.execute("SELECT 1 FROM budgets WHERE budget_id = ?", (budget_id,)).fetchone() is not None


def _customer_exists(tx: Cursor, user_id: str) -> bool:
    return tx.execute("SELECT 1 FROM customers WHERE user_id = ?", (user_id,)).fetchone() is not None
