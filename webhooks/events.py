"""Webhook events for customers: what a charged call announces, as LiteLLM's payload. Pure.

    spend_tracked             every charged call; `spend` is this call's cost
    threshold_crossed         spend reached a fraction of `max_budget` (budget_alert_thresholds)
    budget_crossed            spend reached `max_budget`
    soft_budget_crossed       spend reached `soft_budget`
    projected_limit_exceeded  spend so far, projected linearly to the end of the budget window,
                              passes `max_budget` (checked once 10% of the window has passed)

Budget events carry the customer's spend in the window; each fires once per customer, event,
threshold and budget window (the store keeps the marks). Every payload has all of LiteLLM's
keys, nulls included, plus `soft_budget`, `event_id` (stable across retries) and `created_at`.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import partial

import plain_json
from spend.money import usd, usd_or_none, usd_text
from spend.store import Event

PROJECTION_MIN_ELAPSED = Decimal("0.1")


@dataclass(frozen=True)
class Notify:
    """What the settlement of a call may announce, and the budget it is measured against."""

    token: str | None
    spend_tracked: bool = True
    budget_alerts: bool = True
    thresholds: tuple[Decimal, ...] = ()
    max_budget_units: int | None = None
    soft_budget_units: int | None = None
    window_start: float | None = None
    window_end: float | None = None


def announcements(
    notify: Notify, customer_id: str, cost_units: int, request_id: str, now: float
) -> tuple[tuple[Event, ...], Callable[[int], Sequence[Event]] | None]:
    """What a charged, priced call announces: its `spend_tracked` event, rendered now, and the
    function that renders the budget events of the customer's spend after the charge (which the
    store knows only inside the charge's transaction)."""
    events = ()
    if notify.spend_tracked:
        events = (spend_tracked(notify, customer_id, cost_units, now, call_event_id(request_id, now)),)
    on_spend = None
    if notify.budget_alerts and (notify.max_budget_units is not None or notify.soft_budget_units is not None):
        on_spend = partial(_budget_events, notify, customer_id, now=now)
    return events, on_spend


def spend_tracked(notify: Notify, customer_id: str, cost_units: int, now: float, event_id: str | None = None) -> Event:
    """A call's `spend_tracked` event: the call's own cost, and the budget `notify` measures it against."""
    message = f"Customer spend tracked. Customer={customer_id}, spend={usd_text(cost_units)}"
    return _event("spend_tracked", customer_id, cost_units, notify, message, now, event_id=event_id)


def budget_events(notify: Notify, customer_id: str, spend: int, now: float) -> list[Event]:
    """The budget events the customer's spend after the call crosses into (before the once-only marks)."""
    if not notify.budget_alerts or (notify.max_budget_units is None and notify.soft_budget_units is None):
        return []
    return _budget_events(notify, customer_id, spend, now=now)


def _budget_events(notify: Notify, customer_id: str, spend: int, *, now: float) -> list[Event]:
    window = iso(notify.window_end) if notify.window_end else "lifetime"
    shown = f"Customer={customer_id}, spend={usd_text(spend)}"
    events = []
    maximum, soft = notify.max_budget_units, notify.soft_budget_units
    if maximum is not None:
        for fraction in notify.thresholds:
            if spend >= fraction * maximum and fraction < 1:
                message = f"Customer reached {fraction * 100:g}% of budget. {shown}, max_budget={usd_text(maximum)}"
                events.append(
                    _event("threshold_crossed", customer_id, spend, notify, message, now, (str(fraction), window))
                )
        if spend >= maximum:
            message = f"Customer budget crossed. {shown}, max_budget={usd_text(maximum)}"
            events.append(_event("budget_crossed", customer_id, spend, notify, message, now, ("1", window)))
        else:
            events += _projection(notify, customer_id, spend, now, window)
    if soft is not None and spend >= soft:
        message = f"Customer soft budget crossed. {shown}, soft_budget={usd_text(soft)}"
        events.append(_event("soft_budget_crossed", customer_id, spend, notify, message, now, ("soft", window)))
    return events


def _projection(notify: Notify, customer_id: str, spend: int, now: float, window: str) -> list[Event]:
    start, end, maximum = notify.window_start, notify.window_end, notify.max_budget_units
    if start is None or end is None or spend <= 0 or end <= start:
        return []
    elapsed = Decimal(str(now - start)) / Decimal(str(end - start))
    if elapsed < PROJECTION_MIN_ELAPSED:
        return []
    projected = int(spend / elapsed)
    if projected <= maximum:
        return []
    exceeded_at = start + (now - start) * maximum / spend
    message = (
        f"Customer projected to exceed budget. Customer={customer_id}, spend={usd_text(spend)}, "
        f"projected_spend={usd_text(projected)}, max_budget={usd_text(maximum)}"
    )
    mark, projection = ("projected", window), (usd(projected), iso(exceeded_at))
    return [_event("projected_limit_exceeded", customer_id, spend, notify, message, now, mark, projection)]


def _event(
    name, customer_id, spend_units, notify, message, now, mark=None, projection=(None, None), event_id=None
) -> Event:
    """One event, its body written by the JSON encoder: LiteLLM's keys in the seed's order, then
    Tollgate's; `projection` is (projected_spend, projected_exceeded_date) for projected_limit_exceeded."""
    event_id = event_id or new_event_id(now)
    projected_spend, projected_date = projection
    payload = {
        "spend": usd(spend_units),
        "max_budget": usd_or_none(notify.max_budget_units),
        "token": notify.token,
        "customer_id": customer_id,
        "user_id": None,
        "team_id": None,
        "user_email": None,
        "key_alias": None,
        "projected_exceeded_date": projected_date,
        "projected_spend": projected_spend,
        "event": name,
        "event_group": "customer",
        "event_message": message,
        "soft_budget": usd_or_none(notify.soft_budget_units),
        "event_id": event_id,
        "created_at": iso(now),
    }
    return Event(event_id, name, customer_id, plain_json.dumps(payload), mark)


def new_event_id(now: float) -> str:
    """`evt_` and 32 hex digits: the creation time in milliseconds (48 bits), then 80 random bits,
    as UUIDv7 and ULID lay them out. Ids in creation order keep the outbox's primary-key index
    growing at one end instead of touching a random page of it for every event."""
    return f"evt_{int(now * 1000) & 0xFFFF_FFFF_FFFF:012x}{os.urandom(10).hex()}"


def call_event_id(request_id: str, now: float) -> str:
    """The id of a call's `spend_tracked` event, the same every time it is rendered: the layout of
    `new_event_id`, with 80 bits of the SHA-256 of the call's request id for the random ones."""
    digest = hashlib.sha256(request_id.encode()).hexdigest()[:20]
    return f"evt_{int(now * 1000) & 0xFFFF_FFFF_FFFF:012x}{digest}"


def probe_event(now: float, token: str | None) -> Event:
    """The event `GET /health/services?service=webhook` sends."""
    notify = Notify(token=token)
    return _event("webhook_test", None, 0, notify, "Test event from Tollgate: the webhook is reachable.", now)


def iso(epoch: float) -> str:
    """An epoch time as `2026-11-27T15:00:00Z` (whole seconds, truncated)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
