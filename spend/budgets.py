"""Budget decisions. Pure: no Flask, no SQL; the store calls these while it holds the lock.

A customer's spend lives in accounts: scope `""` is the customer's budget, scope `<model>` a
per-model budget. Admission reserves a call's worst-case cost in every account that has a limit:
- standard: a call is refused when nothing is left; its reservation is capped at what is left,
  and only one call at a time may hold a capped reservation on an account (another that would
  need one is refused until it settles), so however many calls run at once a customer ends at
  most one call's cost above its budget;
- strict: the whole worst case must fit, and `max_tokens` is lowered to what the remaining
  budget can pay, so spend never passes the budget.
Rate limits count the requests (rpm) and settled tokens (tpm) of the last 60 seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

RATE_WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Limit:
    """One budget that applies to a call: at most `max_units` per window ending `window_end`."""

    scope: str
    max_units: int
    window_end: float | None = None
    budget_id: str | None = None


@dataclass(frozen=True)
class Account:
    """The locked state of one account."""

    spend_units: int = 0
    reserved_units: int = 0
    period_end: float | None = None
    capped_in_flight: bool = False  # a call admitted with less than its worst case reserved has not settled


@dataclass(frozen=True)
class Estimate:
    """A call's worst case: prompt cost, cost per output token and the output-token bound."""

    prompt_units: int
    units_per_output_token: int
    output_tokens: int
    max_tokens_sent: bool = False

    @property
    def units(self) -> int:
        return self.prompt_units + self.units_per_output_token * self.output_tokens


@dataclass(frozen=True)
class RateLimits:
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True)
class RateUsage:
    """What the customer did in the last 60 seconds."""

    requests: int = 0
    tokens: int = 0
    oldest_at: float | None = None


@dataclass(frozen=True)
class Plan:
    """An admitted call: units reserved per scope, and `max_tokens` to send when strict lowered it."""

    reservations: dict[str, int] = field(default_factory=dict)
    max_tokens: int | None = None
    capped: frozenset[str] = frozenset()  # scopes where the reservation is less than the worst case


@dataclass(frozen=True)
class OverBudget:
    scope: str
    spend_units: int
    max_units: int


@dataclass(frozen=True)
class OverRate:
    kind: str  # "requests" or "tokens"
    limit: int
    retry_after: int
    resets_at: float


def effective_spend(account: Account, now: float) -> int:
    """Spend in the current window: nothing when the account's window has ended."""
    if account.period_end is not None and account.period_end <= now:
        return 0
    return account.spend_units


def plan_admission(
    accounts: list[tuple[Limit, Account]], estimate: Estimate, *, strict: bool, now: float
) -> Plan | OverBudget:
    """Reserve `estimate` in every limited account, or say which budget refuses the call."""
    left = {}
    for limit, account in accounts:
        spent = effective_spend(account, now)
        remaining = limit.max_units - spent - account.reserved_units
        # Standard mode lets one call at a time run on less than its worst case: two such calls
        # could each end above what they reserved, and together pass the budget by more than one call.
        if remaining <= 0 or (not strict and account.capped_in_flight and estimate.units > remaining):
            return OverBudget(limit.scope, spent, limit.max_units)
        left[limit.scope] = remaining
    if not left:
        return Plan()
    if not strict:
        capped = frozenset(scope for scope, remaining in left.items() if estimate.units > remaining)
        return Plan({scope: min(estimate.units, remaining) for scope, remaining in left.items()}, capped=capped)
    return _strict_plan(left, estimate, accounts)


def _strict_plan(left: dict[str, int], estimate: Estimate, accounts: list[tuple[Limit, Account]]) -> Plan | OverBudget:
    tightest = min(left.values())
    affordable = estimate.output_tokens
    if estimate.units_per_output_token:
        affordable = min(affordable, (tightest - estimate.prompt_units) // estimate.units_per_output_token)
    if affordable < 1 or estimate.prompt_units > tightest:
        scope = min(left, key=left.__getitem__)
        limit, account = next((limit, account) for limit, account in accounts if limit.scope == scope)
        return OverBudget(scope, account.spend_units, limit.max_units)
    units = estimate.prompt_units + estimate.units_per_output_token * affordable
    lowered = affordable if affordable < estimate.output_tokens or not estimate.max_tokens_sent else None
    return Plan({scope: units for scope in left}, max_tokens=lowered)


def check_rate(limits: RateLimits, usage: RateUsage, now: float) -> OverRate | None:
    """Refuse when the last 60 s already hold `rpm` requests or `tpm` tokens."""
    resets_at = (usage.oldest_at or now) + RATE_WINDOW_SECONDS
    retry_after = max(1, math.ceil(resets_at - now))
    if limits.rpm is not None and usage.requests >= limits.rpm:
        return OverRate("requests", limits.rpm, retry_after, resets_at)
    if limits.tpm is not None and usage.tokens >= limits.tpm:
        return OverRate("tokens", limits.tpm, retry_after, resets_at)
    return None
