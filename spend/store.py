"""The storage contract: the records the app stores, the three roles a store plays, and `open_store`.

A store is three roles over one database, composed by `Store`:

- `Ledger`: a call touches it twice, each time in one short transaction. `admit` reserves the
  call's worst-case cost under the customer's lock (only when a budget or rate limit applies);
  `record_call` releases the reservation, adds the real cost, writes the spend-log row and the
  call's webhook events, all or nothing. It also keeps `Idempotency-Key`s and reads spend logs.
  Every call it records (and every refusal, `record_refusal`) is also added to the daily
  rollup in the same transaction (`spend.activity`), which the activity reads come from.
- `Admin`: customers and budget tiers, for the `/customer/*` and `/budget/*` routes.
- `Outbox`: webhook events, inserted by `record_call` already rendered (as bytes; the store
  never looks inside), claimed by one worker's delivery thread at a time, marked, retried.

Each engine (`spend.sqlite`, `spend.postgres`) provides a `Database`; the roles (`spend.ledger`,
`spend.admin`, `spend.outbox`) are written once against it. Money is integer pico-dollars of any
size (see `spend.pricing`); the decisions themselves are the pure functions of `spend.budgets`.
Nothing outside `spend/` imports an engine: `spend.engines.open_store` picks it from the URL.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from providers.base import Usage
from spend.budgets import Estimate, Limit, OverBudget, OverRate, Plan, RateLimits


def holder_of(pid: int) -> str:
    """Who holds a budget reservation: the worker process, by host and pid (unique among live ones)."""
    return f"{socket.gethostname()}:{pid}"


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
    response_id: str | None = None  # the upstream's id of the answer (`chatcmpl-…`, `resp_…`, `msg_…`)

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
    response_id: str | None = None


@dataclass(frozen=True)
class SpendLogFilter:
    """Which spend-log rows to read: a call (by Tollgate's call id or the upstream's response id),
    a customer, a model (group or provider model), a time range."""

    customer_id: str | None = None
    model: str | None = None
    since: str | None = None  # ISO-8601, inclusive
    until: str | None = None  # ISO-8601, exclusive
    request_id: str | None = None


@dataclass(frozen=True)
class DailyActivity:
    """Calls summed per UTC day, as the daily rollup keeps them (written with each call, so reading
    a month of activity never scans the spend log).

    A `daily_activity` row is one day's calls of one customer (None: calls charged to nobody) to
    one model; a `daily_totals` row sums a whole day (`customer_id` None, models ""). Refused calls
    have no deployment: their `provider_model` is "". Spend counts charged calls only; refused and
    failed calls count in `api_requests` and `failed_requests`.
    """

    day: str  # YYYY-MM-DD, UTC
    customer_id: str | None
    model_group: str
    provider_model: str
    spend_units: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    api_requests: int = 0
    successful_requests: int = 0
    failed_requests: int = 0
    alias: str | None = None  # the customer's alias, when it has one

    @property
    def provider(self) -> str | None:
        """The provider of `provider_model` (`openai` of `openai/gpt-4o`); None for refused calls."""
        return self.provider_model.partition("/")[0] or None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ActivityFilter:
    """Which days of the rollup to read: UTC days `start_day` to `end_day` (YYYY-MM-DD, both
    included), of some customers (None: every call, including those charged to nobody) but not
    `exclude`, of one model (group or provider model)."""

    start_day: str
    end_day: str
    customer_ids: tuple[str, ...] | None = None
    model: str | None = None
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class CustomerSpend:
    """A customer's calls and spend over some days (`POST /global/spend/end_users`)."""

    customer_id: str
    calls: int
    spend_units: int


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
class Event:
    """A webhook event to insert into the outbox: its body as it will be posted, rendered by
    `webhooks.events`, and its once-only mark (threshold, window) if it has one."""

    event_id: str
    event: str
    customer_id: str | None
    body: str
    mark: tuple[str, str] | None = None


@dataclass(frozen=True)
class Settlement:
    """How `record_call` settles a call: where its cost goes, what admission left behind, and
    what it announces.

    `events` go into the outbox with the charge (the call's `spend_tracked`); `on_spend`, given
    the customer's spend after the charge, returns the budget events it crosses into. Both are
    rendered by `webhooks.events`; the store only inserts them.
    """

    charges: tuple[Charge, ...] = (Charge(),)
    reserved: bool = False
    rate_tracked: bool = False
    events: tuple[Event, ...] = ()
    on_spend: Callable[[int], Sequence[Event]] | None = field(default=None, compare=False)
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
    """An event as the outbox keeps it."""

    event_id: str
    event: str
    customer_id: str | None
    body: str
    status: str
    attempts: int
    created_at: float
    next_attempt_at: float
    last_error: str | None = None


@dataclass(frozen=True)
class OutboxDepth:
    """How far webhook delivery is behind: the events waiting, and when the oldest was written."""

    pending: int
    oldest_created_at: float | None  # epoch seconds; None when nothing waits


class Conflict(Exception):
    """The row to create exists already."""


class Missing(Exception):
    """Rows named by the caller do not exist; `ids` lists them."""

    def __init__(self, ids: list[str]):
        super().__init__(", ".join(ids))
        self.ids = ids


class Unstorable(ValueError):
    """A value the database cannot hold or compare (PostgreSQL text cannot contain NUL): the
    request is refused; nothing was stored."""


class StoreUnavailable(Exception):
    """The database cannot be reached or cannot write; nothing was stored. The message names the
    database (host and name, or file) and what went wrong, never a password."""


class Ledger(Protocol):
    """Calls: admission, settlement, idempotency, and the spend log they write."""

    def admit(self, request: AdmissionRequest) -> Plan | OverBudget | OverRate:
        """Create the customer if unseen, then reserve or refuse, all under the customer's lock."""

    def release_held_by(self, holder: str) -> int:
        """Give back the reservations of a worker process that died (`ledger.holder_of(pid)`)."""

    def record_call(self, record: CallRecord, settlement: Settlement = PLAIN_CALL) -> None:
        """Release the call's reservation, charge its cost, write its spend-log row and events, together."""

    def spend_logs(
        self, customer_id: str | None = None, limit: int = 1000, *, where: SpendLogFilter | None = None, offset: int = 0
    ) -> list[SpendLogRow]:
        """Spend-log rows, newest first: of one customer, or matching `where`."""

    def count_spend_logs(self, where: SpendLogFilter) -> int:
        """How many rows match."""

    def delete_spend_logs_before(self, cutoff: float, batch: int) -> int:
        """Delete up to `batch` spend-log rows created before `cutoff` (epoch seconds), in one
        transaction; returns how many (retention: `spend.retention`). Nothing else is touched."""

    def record_refusal(self, record: CallRecord) -> None:
        """Keep a call refused before any upstream (blocked, over budget, rate limited…): its
        spend-log row (status `failure`, cost 0) and its count in the daily rollup, nothing else."""

    def daily_activity(
        self,
        customer_ids: Sequence[str] | None,
        start_day: str,
        end_day: str,
        model: str | None = None,
        *,
        exclude: Sequence[str] = (),
    ) -> list[DailyActivity]:
        """The rollup rows of those days (see `ActivityFilter`), newest day first, then by customer and model."""

    def daily_totals(self, where: ActivityFilter) -> list[DailyActivity]:
        """One row per day with activity matching `where`, summed over customers and models; newest first."""

    def daily_breakdown(self, where: ActivityFilter, by: str) -> list[DailyActivity]:
        """The rows matching `where` summed per day and `by`: "customer" (with its alias; models "")
        or "model" (customer None); newest day first."""

    def top_customers(self, start_day: str, end_day: str, limit: int) -> list[CustomerSpend]:
        """The `limit` customers with the most spend over those days (both included), most first."""

    def claim_idempotency(self, claim: IdempotencyClaim, request_id: str, now: float, hold: float) -> Replay | None:
        """Take the key for this call (None), or return the call that holds or used it in the last 24 h."""

    def drop_idempotency(self, claim: IdempotencyClaim, request_id: str) -> None:
        """Free a key this call took but will not use (the call was refused before any upstream)."""


@dataclass(frozen=True)
class DashboardSession:
    """A login to the dashboard: found by the digest of the browser's token, never the token."""

    token_hash: str
    csrf_token: str
    key_hash: str  # the master key's digest at login: another key ends the session
    expires_at: float


class Admin(Protocol):
    """Customers and budget tiers, and the dashboard's login sessions."""

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

    def get_budget(self, budget_id: str) -> Budget | None: ...

    def create_budget(self, budget_id: str, columns: dict, now: float) -> Budget:
        """Insert a shared tier; Conflict when the id is taken."""

    def update_budget(self, budget_id: str, columns: dict, now: float) -> Budget:
        """Set the given columns; Missing when absent."""

    def list_budgets(self, budget_ids: list[str] | None = None) -> list[Budget]: ...

    def delete_budget(self, budget_id: str) -> Budget:
        """Delete a tier; its customers are unlinked. Missing when absent."""

    def open_session(self, session: DashboardSession, now: float) -> None:
        """Keep a new dashboard session (and forget those expired by `now`)."""

    def find_session(self, token_hash: str, now: float) -> DashboardSession | None:
        """The session with this token digest, None when unknown or expired."""

    def close_session(self, token_hash: str) -> None:
        """End a session (logout); nothing when it is unknown."""


class Outbox(Protocol):
    """Webhook events between the call that wrote them and their delivery."""

    def claim(self, now: float, lease_seconds: float, limit: int, due_by: float | None = None) -> list[OutboxEvent]:
        """Lease up to `limit` pending events due by `due_by` (default `now`), in the order they
        were written, so no other worker posts them meanwhile. Finding none takes no write lock."""

    def release(self, event_ids: list[str]) -> None:
        """Give claimed events back without an attempt."""

    def delivered(self, event_ids: list[str], now: float) -> None:
        """Mark posted events delivered, in one transaction."""

    def failed(self, event_id: str, error: str, retry_at: float) -> str:
        """Record a failed attempt; returns the new status (`pending`, or `dead` past its retry window)."""

    def purge_delivered(self, before: float, limit: int) -> int:
        """Delete up to `limit` events delivered before `before`; returns how many. Pending and
        dead events are never deleted."""

    def list(self, status: str | None, limit: int) -> list[OutboxEvent]:
        """The newest events, of one status or all."""

    def requeue(self, event_ids: list[str] | None, now: float, retry_window: float) -> int:
        """Dead (or the named) events become pending again with a fresh retry window."""

    def pending_depth(self) -> OutboxDepth:
        """The pending events' count and oldest write time (for the metrics, read at each scrape)."""


class Database(Protocol):
    """What an engine gives the roles: transactions, and the few places its SQL differs.

    The roles' SQL is one text for both engines: `?` and `:name` parameters, `ON CONFLICT`,
    `RETURNING`, and money only through `units_add(a, b)`, `units_le(a, b)` and the aggregate
    `units_sum(x)`, which each engine defines exactly (NUMERIC on PostgreSQL; decimal text on
    SQLite, whose INTEGER stops at $9.2 M in pico-dollars).
    """

    locks_rows: bool  # True where concurrent writers run at once and rows must be locked (PostgreSQL)
    skip_locked: str  # appended to the outbox's claim subquery: " FOR UPDATE SKIP LOCKED" or ""

    def write(self, op: Callable[[Cursor], object]) -> object:
        """Run `op` in one write transaction and return its result; all or nothing."""

    def read(self, op: Callable[[Cursor], object]) -> object:
        """Run `op` on a connection for reading."""

    def units(self, value: int | None) -> object:
        """A money parameter as this engine stores it."""


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence | dict = ()) -> Rows: ...


class Rows(Protocol):
    rowcount: int

    def fetchone(self) -> tuple | None: ...

    def fetchall(self) -> list[tuple]: ...


class Engine(Protocol):
    """The database's life: schema, health, connections, upkeep."""

    def migrate(self, report: Callable[[str], None] | None = None) -> list[str]:
        """Apply pending numbered migrations, telling `report` each step; safe when several
        processes call it at once. Returns the names of the migrations applied."""

    def pending_migrations(self) -> list[str]:
        """The migrations not applied yet (all of them on an empty database)."""

    def ping(self) -> bool:
        """True when the database answers and can write."""

    def check_writable(self) -> None:
        """Raise StoreUnavailable, saying why, unless the database can be written now."""

    def describe(self) -> str:
        """Where the data is, for messages: a file path, or host and database (never a password)."""

    def close(self) -> None:
        """Close this process's connections."""

    def start_background(self) -> None:
        """Start this process's upkeep (SQLite: WAL checkpoints off the calls' path), once."""

    def stop_background(self) -> None:
        """Stop it."""


def can_write(engine: Engine, log) -> bool:
    """An engine's `ping`: whether it can be written now (`check_writable`); the reason is logged when not."""
    try:
        engine.check_writable()
    except StoreUnavailable as exc:
        log.warning("store not writable: %s", exc)
        return False
    return True


@dataclass(frozen=True)
class Store:
    """One database in its three roles."""

    engine: Engine
    ledger: Ledger
    admin: Admin
    outbox: Outbox
