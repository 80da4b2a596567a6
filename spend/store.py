"""The storage protocol every backend implements, the records it stores, and `open_store`.

A backend keeps customers, budget tiers and the spend log. Its write for a call
(`record_call`) is one short transaction: the customer's spend incremented (the customer
created on first sight) and one spend-log row inserted, all or nothing. Money is integer
pico-dollars (see `spend.pricing`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from providers.base import Usage


def iso_timestamp(epoch_seconds: float) -> str:
    """UTC ISO-8601 with microseconds and a `Z`; fixed width, so text order is time order."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class CallRecord:
    """One LLM call as the spend log keeps it."""

    request_id: str
    customer_id: str | None
    model_group: str
    provider_model: str
    deployment_id: str
    usage: Usage
    cost_units: int
    started_at: float
    ended_at: float
    status: str = "success"
    priced: bool = True
    estimated: bool = False
    error: str | None = None

    @property
    def latency_ms(self) -> int:
        return round((self.ended_at - self.started_at) * 1000)


@dataclass(frozen=True)
class Budget:
    """A budget row: a shared tier, or a customer's own."""

    budget_id: str
    max_budget_units: int | None = None
    soft_budget_units: int | None = None
    tpm_limit: int | None = None
    rpm_limit: int | None = None
    model_max_budget: dict | None = None
    budget_duration: str | None = None
    budget_reset_at: str | None = None
    created_at: str | None = None


@dataclass(frozen=True)
class Customer:
    user_id: str
    spend_units: int = 0
    blocked: bool = False
    alias: str | None = None
    allowed_model_region: str | None = None
    default_model: str | None = None
    models: tuple[str, ...] = ()
    budget: Budget | None = None


@dataclass(frozen=True)
class SpendLogRow:
    request_id: str
    customer_id: str | None
    model_group: str
    provider_model: str
    deployment_id: str
    prompt_tokens: int
    completion_tokens: int
    cost_units: int
    status: str
    estimated: bool
    created_at: str
    extra: dict = field(default_factory=dict)


class SpendStore(Protocol):
    """What the app needs from a database."""

    def migrate(self) -> None:
        """Apply pending numbered migrations; safe when several processes call it at once."""

    def record_call(self, record: CallRecord) -> None:
        """Charge the call to its customer and log it, in one transaction."""

    def get_customer(self, user_id: str) -> Customer | None:
        """The customer with its budget, or None."""

    def spend_logs(self, customer_id: str | None = None, limit: int = 1000) -> list[SpendLogRow]:
        """Spend-log rows, newest first."""

    def ping(self) -> bool:
        """True when the database answers."""

    def close(self) -> None:
        """Close this process's connections."""


def open_store(database_url: str) -> SpendStore:
    """The backend for a `DATABASE_URL`; nothing is connected until first use."""
    from spend.sqlite import SQLiteStore, sqlite_path

    if database_url.startswith(("postgres://", "postgresql://")):
        raise ValueError("PostgreSQL support is not available yet; use a SQLite DATABASE_URL")
    return SQLiteStore(sqlite_path(database_url))
