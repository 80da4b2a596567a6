"""The storage protocol every backend implements, the records it stores, and `open_store`.

A backend keeps customers, their spend accounts, budget tiers, reservations, rate-limit events
and the spend log. A call touches it twice, each time in one short transaction: `admit`
reserves the call's worst-case cost under the customer's lock (only when a budget or rate limit
applies), and `record_call` releases the reservation, adds the real cost and writes the
spend-log row, all or nothing. Money is integer pico-dollars (see `spend.pricing`); the
decisions themselves are the pure functions of `spend.budgets`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from providers.base import Usage
from spend.budgets import Estimate, Limit, OverBudget, OverRate, Plan, RateLimits
from webhooks.events import Notify


def iso_timestamp(epoch_seconds: float) -> str:
    """UTC ISO-8601 with microseconds and a `Z`; fixed width, so text order is time order."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def epoch(timestamp: str) -> float:
    """An `iso_timestamp` back as epoch seconds: a time as the spend log keeps it, to the microsecond."""
    return datetime.fromisoformat(timestamp).timestamp()


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
    attempts: int = 1

    @property
    def latency_ms(self) -> int:
        return round((self.ended_at - self.started_at) * 1000)


BUDGET_COLUMNS = (
    "max_budget_units",
    "soft_budget_units",
    "tpm_limit",
    "rpm_limit",
    "model_max_budget",
    "budget_duration",
    "budget_reset_at",
)


@dataclass(frozen=True)
class Budget:
    """A budget row: a shared tier (`owner_user_id` None), or one customer's own."""

    budget_id: str
    max_budget_units: int | None = None
    soft_budget_units: int | None = None
    tpm_limit: int | None = None
    rpm_limit: int | None = None
    model_max_budget: dict | None = None  # {model: {"max_budget_units": int, "budget_duration": str | None}}
    budget_duration: str | None = None
    budget_reset_at: str | None = None
    created_at: str | None = None
    owner_user_id: str | None = None


@dataclass(frozen=True)
class Customer:
    user_id: str
    spend_units: int = 0
    spend_period_end: float | None = None
    blocked: bool = False
    alias: str | None = None
    allowed_model_region: str | None = None
    default_model: str | None = None
    models: tuple[str, ...] = ()
    budget: Budget | None = None


@dataclass(frozen=True)
class SpendLogRow:
    """One spend-log row as stored (times are ISO-8601 UTC text)."""

    request_id: str
    customer_id: str | None
    model_group: str
    provider_model: str
    deployment_id: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_creation_tokens: int
    reasoning_tokens: int
    cost_units: int
    priced: bool
    estimated: bool
    status: str
    error: str | None
    latency_ms: int
    started_at: str
    created_at: str
    attempts: int = 1


@dataclass(frozen=True)
class SpendLogFilter:
    """Which spend-log rows to read: a customer, a model (group or provider model), a time range."""

    customer_id: str | None = None
    model: str | None = None
    since: str | None = None  # ISO-8601, inclusive
    until: str | None = None  # ISO-8601, exclusive


@dataclass(frozen=True)
class AdmissionRequest:
    """Reserve a call's worst case against the customer's budgets and rate limits, atomically."""

    request_id: str
    customer_id: str
    limits: tuple[Limit, ...]
    estimate: Estimate
    now: float
    expires_at: float
    strict: bool = False
    rate_limits: RateLimits | None = None


@dataclass(frozen=True)
class Charge:
    """An account a settled call's cost is added to, and the end of that account's window."""

    scope: str = ""
    window_end: float | None = None


@dataclass(frozen=True)
class Settlement:
    """How `record_call` settles a call: where its cost goes, what admission left behind."""

    charges: tuple[Charge, ...] = (Charge(),)
    reserved: bool = False
    rate_tracked: bool = False
    notify: Notify | None = None  # the webhook events this call may raise, when webhooks are on
    idempotency: IdempotencyClaim | None = None  # the key this call holds, finished with it
    response: bytes | None = None  # the answer kept for replays of that key
    content_type: str | None = None


@dataclass(frozen=True)
class IdempotencyClaim:
    """A call holding an `Idempotency-Key`: (customer or "", key)."""

    customer: str
    key: str


@dataclass(frozen=True)
class Replay:
    """An earlier call with the same key and customer: its answer (None while it is in flight)."""

    request_id: str
    response: bytes | None
    content_type: str | None
    cost_units: int | None
    in_flight: bool


# A call with no budget or rate limit: its cost goes to the customer's lifetime spend.
PLAIN_CALL = Settlement()


@dataclass(frozen=True)
class OutboxEvent:
    event_id: str
    event: str
    customer_id: str | None
    body: str
    status: str
    attempts: int
    created_at: float
    next_attempt_at: float
    last_error: str | None = None
    seq: int | None = None  # set only on a spend_tracked event read from its call's spend-log row: the row's seq


@dataclass(frozen=True)
class StreamClaim:
    """A run of spend-log rows (`start` < seq <= `end`) leased to one dispatcher (`owner`), and the
    `spend_tracked` events of those rows that announce one, in order."""

    start: int
    end: int
    owner: str
    events: list[OutboxEvent]
    more: bool = False  # stopped at its limit or its scan: more rows may be due after `end`


class Conflict(Exception):
    """The row to create exists already."""


class Missing(Exception):
    """Rows named by the caller do not exist; `ids` lists them."""

    def __init__(self, ids: list[str]):
        super().__init__(", ".join(ids))
        self.ids = ids


class SpendStore(Protocol):
    """What the app needs from a database. Every method is one short transaction."""

    def migrate(self) -> None:
        """Apply pending numbered migrations; safe when several processes call it at once."""

    def ping(self) -> bool:
        """True when the database answers."""

    def close(self) -> None:
        """Close this process's connections."""

    def start_background(self) -> None:
        """Start this process's upkeep thread (SQLite: WAL checkpoints off the calls' path), once."""

    def stop_background(self) -> None:
        """Stop it."""

    # calls
    def admit(self, request: AdmissionRequest) -> Plan | OverBudget | OverRate:
        """Create the customer if unseen, then reserve or refuse, all under the customer's lock."""

    def record_call(self, record: CallRecord, settlement: Settlement = PLAIN_CALL) -> None:
        """Release the call's reservation, charge its cost and write its spend-log row, together."""

    def spend_logs(
        self, customer_id: str | None = None, limit: int = 1000, *, where: SpendLogFilter | None = None, offset: int = 0
    ) -> list[SpendLogRow]:
        """Spend-log rows, newest first: of one customer, or matching `where`."""

    def count_spend_logs(self, where: SpendLogFilter) -> int:
        """How many rows match."""

    def claim_idempotency(self, claim: IdempotencyClaim, request_id: str, now: float, hold: float) -> Replay | None:
        """Take the key for this call (None), or return the call that holds or used it in the last 24 h."""

    def drop_idempotency(self, claim: IdempotencyClaim, request_id: str) -> None:
        """Free a key this call took but will not use (the call was refused before any upstream)."""

    # webhook outbox
    def claim_events(
        self, now: float, lease_seconds: float, limit: int, due_by: float | None = None
    ) -> list[OutboxEvent]:
        """Lease pending events due by `due_by` (default `now`), oldest first, so no other worker
        posts them meanwhile. Finding none takes no write lock."""

    def release_events(self, event_ids: list[str]) -> None:
        """Give claimed events back without an attempt."""

    def events_delivered(self, event_ids: list[str], now: float) -> None:
        """Mark a batch of posted events delivered, in one transaction."""

    def event_failed(self, event_id: str, error: str, retry_at: float, now: float) -> str:
        """Record a failed attempt; returns the new status (`pending`, or `dead` past its retry window)."""

    def claim_stream(
        self, now: float, lease_seconds: float, limit: int, due_by: float | None = None
    ) -> StreamClaim | None:
        """Lease a run of spend-log rows and read their `spend_tracked` events: first a run given
        back part-posted or whose dispatcher's lease ran out; else the rows after the last run
        claimed, for calls ended by `due_by` (default `now`), at most `limit` events. Several
        dispatchers post consecutive runs at once. None when nothing is due, and finding that
        takes no write lock. A run whose rows announce nothing is settled as it is claimed."""

    def stream_settled(
        self, claim: StreamClaim, settled: int, failed: list[tuple[OutboxEvent, str, float]], now: float
    ) -> list[OutboxEvent]:
        """Settle the claim's first `settled` events (all of its rows when all are settled): the
        `failed` ones among them, (event, error, retry_at), go into the outbox with one attempt;
        the rest of the run is given back for any dispatcher to take at once; the position moves
        over the settled runs at its front. Returns the failed events already past their retry
        window (dead). A dispatcher that lost the lease to another meanwhile changes nothing."""

    def purge_delivered(self, before: float, limit: int) -> int:
        """Delete up to `limit` events delivered before `before`; returns how many. Pending and
        dead events are never deleted."""

    def list_events(self, status: str | None, limit: int) -> list[OutboxEvent]: ...

    def requeue_events(self, event_ids: list[str] | None, now: float, retry_window: float) -> int:
        """Dead (or the named) events become pending again with a fresh retry window."""

    # customers
    def get_customer(self, user_id: str) -> Customer | None:
        """The customer with its own budget, or None."""

    def create_customer(self, customer: Customer, budget: dict | None, now: float) -> Customer:
        """Insert a customer (and its private budget from `budget` columns); Conflict, Missing(budget)."""

    def update_customer(self, user_id: str, fields: dict, budget: dict, now: float) -> Customer:
        """Set `fields`; apply `budget` columns to the customer's own budget (forking a shared tier)."""

    def delete_customers(self, user_ids: list[str]) -> int:
        """Delete all or none (Missing); spend logs stay."""

    def list_customers(self, offset: int, limit: int, search: str | None) -> tuple[list[Customer], int]:
        """A page ordered by user_id, and the total matching."""

    def set_blocked(self, user_ids: list[str], blocked: bool, now: float) -> list[Customer]:
        """Block (creating unseen ids) or unblock (all must exist)."""

    # budgets
    def get_budget(self, budget_id: str) -> Budget | None: ...

    def create_budget(self, budget_id: str, columns: dict, now: float) -> Budget:
        """Insert a shared tier; Conflict when the id is taken."""

    def update_budget(self, budget_id: str, columns: dict, now: float) -> Budget:
        """Set the given columns; Missing when absent."""

    def list_budgets(self, budget_ids: list[str] | None = None) -> list[Budget]: ...

    def delete_budget(self, budget_id: str) -> Budget:
        """Delete a tier; its customers are unlinked. Missing when absent."""


def open_store(database_url: str) -> SpendStore:
    """The backend for a `DATABASE_URL`; nothing is connected until first use."""
    from spend.sqlite import SQLiteStore, sqlite_path

    if database_url.startswith(("postgres://", "postgresql://")):
        raise ValueError("PostgreSQL support is not available yet; use a SQLite DATABASE_URL")
    return SQLiteStore(sqlite_path(database_url))
