"""What the dashboard shows, worked out from the store's records: a customer's status, budget bar
and spend per day as an SVG bar chart drawn on the server (no JavaScript, no chart library).

Money stays integer pico-dollars here and becomes text only through `spend.money.usd_text`;
the chart's bar heights are integer arithmetic on those units.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from spend.budgets import Account, effective_spend
from spend.money import usd_text
from spend.store import Customer, Ledger

NEAR_PERCENT = 80  # "near" its max budget from this share on (or from the soft budget, when set)
CHART_DAYS = 30


@dataclass(frozen=True)
class BudgetView:
    """A customer's spend against its budget, as shown in the list and on its page."""

    spend: str
    max_budget: str | None
    soft_budget: str | None
    percent: int | None  # spend / max budget, 0..100, for the bar
    statuses: tuple[str, ...]


def budget_view(customer: Customer, now: float) -> BudgetView:
    """Spend in the current window, the budget, and the statuses: blocked, over budget (spend at or
    past the max budget), near budget (past the soft budget, or 80% of the max budget)."""
    spend = effective_spend(Account(customer.spend_units, 0, customer.spend_period_end), now)
    budget = customer.budget
    max_units = budget.max_budget_units if budget else None
    soft_units = budget.soft_budget_units if budget else None
    statuses = ["blocked"] if customer.blocked else []
    if max_units is not None and spend >= max_units:
        statuses.append("over budget")
    elif (soft_units is not None and spend >= soft_units) or (
        max_units is not None and spend * 100 >= max_units * NEAR_PERCENT
    ):
        statuses.append("near budget")
    percent = None
    if max_units is not None:
        percent = 100 if spend >= max_units else spend * 100 // max_units
    return BudgetView(
        spend=usd_text(spend),
        max_budget=usd_text(max_units) if max_units is not None else None,
        soft_budget=usd_text(soft_units) if soft_units is not None else None,
        percent=percent,
        statuses=tuple(statuses) or ("active",),
    )


def chart_days(now: float, count: int = CHART_DAYS) -> tuple[date, date]:
    """The first and last (today, UTC) day of the chart."""
    today = datetime.fromtimestamp(now, UTC).date()
    return today - timedelta(days=count - 1), today


def daily_spend(ledger: Ledger, customer_id: str, first: date, last: date) -> list[tuple[date, int]]:
    """The customer's spend on each day from `first` to `last` (UTC), zero on days without calls,
    read from the ledger's daily rollup (one row per day and model), never from the spend log."""
    totals = {first + timedelta(days=n): 0 for n in range((last - first).days + 1)}
    for row in ledger.daily_activity([customer_id], first.isoformat(), last.isoformat()):
        day = date.fromisoformat(row.day)
        if day in totals:
            totals[day] += row.spend_units
    return sorted(totals.items())


@dataclass(frozen=True)
class Bar:
    x: int
    y: int
    width: int
    height: int
    title: str  # the day and its exact spend, shown on hover


@dataclass(frozen=True)
class Chart:
    """An SVG bar chart's geometry in its own coordinates (`width` × `height`)."""

    width: int
    height: int
    plot_bottom: int
    bars: tuple[Bar, ...]
    peak: str  # the tallest day's spend, the top of the scale
    total: str
    first_day: str
    last_day: str


def spend_chart(days: list[tuple[date, int]], width: int = 720, height: int = 200) -> Chart:
    """Bars of each day's spend, scaled so the tallest fills the plot (integer arithmetic)."""
    plot_top, plot_bottom = 16, height - 24
    plot_height = plot_bottom - plot_top
    peak = max((units for _, units in days), default=0)
    slot = width // max(len(days), 1)
    bars = []
    for index, (day, units) in enumerate(days):
        bar_height = units * plot_height // peak if peak else 0
        if units and not bar_height:
            bar_height = 1  # a day with any spend stays visible
        bars.append(
            Bar(
                x=index * slot + 1,
                y=plot_bottom - bar_height,
                width=max(slot - 2, 1),
                height=bar_height,
                title=f"{day.isoformat()}: ${usd_text(units)}",
            )
        )
    return Chart(
        width=width,
        height=height,
        plot_bottom=plot_bottom,
        bars=tuple(bars),
        peak=usd_text(peak),
        total=usd_text(sum(units for _, units in days)),
        first_day=days[0][0].isoformat() if days else "",
        last_day=days[-1][0].isoformat() if days else "",
    )
