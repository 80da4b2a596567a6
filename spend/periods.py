"""Budget windows: `budget_duration` strings and when a budget resets. Pure: `now` is passed in.

LiteLLM's calendar rules, in UTC:
- `Ns`, `Nm`, `Nh`: the next multiple of N seconds/minutes/hours counted from midnight;
- `1d` (`daily`): the next midnight; `7d`, `1w` (`weekly`): the next Monday, midnight;
- `30d`, `1mo` (`monthly`): the 1st of next month; `Nmo`: the 1st of the month N months ahead;
- any other `Nd` (or `Nw`): midnight today plus N days (N×7).
Resets happen lazily: a budget whose stored `budget_reset_at` has passed is in the window that
ends at the next boundary after now, and a customer whose spend belongs to an ended window has
spent nothing in the current one. No cron job is needed, and every worker agrees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"^(\d+)(s|m|h|d|w|mo)$")
_ALIASES = {"hourly": "1h", "daily": "1d", "weekly": "7d", "monthly": "1mo"}
_SECONDS = {"s": 1, "m": 60, "h": 3600}


@dataclass(frozen=True)
class Duration:
    count: int
    unit: str  # s, m, h, d, mo

    def __str__(self) -> str:
        return f"{self.count}{self.unit}"


def parse_duration(text: object) -> Duration:
    """Parse a `budget_duration`; raise ValueError with a message for the client otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"Invalid budget_duration {text!r}. Use a format like '30s', '1h', '1d', '7d' or '1mo'.")
    normalized = _ALIASES.get(text.strip().lower(), text.strip().lower())
    match = _DURATION.match(normalized)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"Invalid budget_duration '{text}'. Use a format like '30s', '1h', '1d', '7d' or '1mo'.")
    count, unit = int(match.group(1)), match.group(2)
    if unit == "w":
        count, unit = count * 7, "d"
    return Duration(count, unit)


def next_reset(duration: Duration, now: datetime) -> datetime:
    """The first reset boundary strictly after `now` (an aware UTC datetime)."""
    now = now.astimezone(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if duration.unit in _SECONDS:
        step = duration.count * _SECONDS[duration.unit]
        elapsed = (now - midnight).total_seconds()
        return midnight + timedelta(seconds=(int(elapsed // step) + 1) * step)
    if duration.unit == "d" and duration.count == 1:
        return midnight + timedelta(days=1)
    if duration.unit == "d" and duration.count == 7:
        return midnight + timedelta(days=7 - now.weekday())
    if duration.unit == "d" and duration.count != 30:
        return midnight + timedelta(days=duration.count)
    months = 1 if duration.unit == "d" else duration.count
    month_index = now.month - 1 + months
    return midnight.replace(year=now.year + month_index // 12, month=month_index % 12 + 1, day=1)


def current_reset(stored_reset_at: datetime | None, duration: Duration | None, now: datetime) -> datetime | None:
    """When the budget's current window ends: the stored time, rolled past `now` if it has passed."""
    if duration is None:
        return None
    if stored_reset_at is not None and stored_reset_at > now:
        return stored_reset_at
    return next_reset(duration, now)


def to_iso(moment: datetime | None) -> str | None:
    """`2026-12-01T00:00:00Z`, as budgets show `budget_reset_at`."""
    if moment is None:
        return None
    text = moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return text.replace(".000000Z", "Z")


def from_iso(text: str | None) -> datetime | None:
    """Parse an ISO-8601 time (with `Z` or an offset; naive means UTC)."""
    if text is None:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def window_start(duration: Duration, end: datetime) -> datetime:
    """When the window ending at `end` began (one duration earlier; a month for `30d`/`Nmo`)."""
    if duration.unit in _SECONDS:
        return end - timedelta(seconds=duration.count * _SECONDS[duration.unit])
    if duration.unit == "d" and duration.count != 30:
        return end - timedelta(days=duration.count)
    months = 1 if duration.unit == "d" else duration.count
    month_index = end.month - 1 - months
    return end.replace(year=end.year + month_index // 12, month=month_index % 12 + 1)
