"""Budget windows: `budget_duration` strings and when a budget resets. Pure: `now` is passed in.

LiteLLM's calendar rules, in UTC:
- `Ns`, `Nm`, `Nh`: the next multiple of N seconds/minutes/hours counted from midnight;
- `1d` (`daily`): the next midnight; `7d`, `1w` (`weekly`): the next Monday, midnight;
- `30d`, `1mo` (`monthly`): the 1st of next month; `Nmo`: the 1st of the month N months ahead;
- any other `Nd` (or `Nw`): midnight today plus N days (N×7).
A window is at most 100 years and a stored time lies in the years 1 to 9998, so every boundary
is a date Python can compute.
Resets happen lazily: a budget whose stored `budget_reset_at` has passed is in the window that
ends at the next boundary after now, and a customer whose spend belongs to an ended window has
spent nothing in the current one. No cron job is needed, and every worker agrees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"([0-9]+)(s|m|h|d|w|mo)")  # ASCII digits: `\d` also takes "²" and "١"
_ALIASES = {"hourly": "1h", "daily": "1d", "weekly": "7d", "monthly": "1mo"}
_SECONDS = {"s": 1, "m": 60, "h": 3600}
# The longest budget window: 100 years, so every next reset is a computable date.
MAX_DAYS = 36_525
MAX_MONTHS = 1_200
# The latest UTC year a stored time may have: a year later is still a date Python can compute.
LAST_YEAR = 9998
_FORMAT_HINT = "Use a format like '30s', '1h', '1d', '7d' or '1mo'"


@dataclass(frozen=True)
class Duration:
    count: int
    unit: str  # s, m, h, d, mo

    def __str__(self) -> str:
        return f"{self.count}{self.unit}"


def parse_duration(text: object) -> Duration:
    """Parse a `budget_duration` of at most 100 years; raise ValueError with a message for the client otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"Invalid budget_duration {text!r}. {_FORMAT_HINT}.")
    normalized = _ALIASES.get(text.strip().lower(), text.strip().lower())
    match = _DURATION.fullmatch(normalized)
    if not match or not match.group(1).lstrip("0"):
        raise ValueError(f"Invalid budget_duration '{text}'. {_FORMAT_HINT}.")
    digits, unit = match.group(1), match.group(2)
    significant = digits.lstrip("0")
    count = int(significant) if len(significant) <= 12 else 10**12  # longer is past the bound anyway
    if unit == "w":
        count, unit = count * 7, "d"
    days = count * _SECONDS[unit] / 86_400 if unit in _SECONDS else count
    if (unit == "mo" and count > MAX_MONTHS) or (unit != "mo" and days > MAX_DAYS):
        raise ValueError(
            f"Invalid budget_duration '{text}': a budget window is at most 100 years ({MAX_DAYS}d or {MAX_MONTHS}mo)."
        )
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
