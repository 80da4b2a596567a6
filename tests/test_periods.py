"""Budget windows follow LiteLLM's calendar rules, in UTC (SPEC §8)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from spend.periods import Duration, current_reset, from_iso, next_reset, parse_duration, to_iso


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "duration"),
    [
        ("30s", Duration(30, "s")),
        ("10m", Duration(10, "m")),
        ("1h", Duration(1, "h")),
        ("24h", Duration(24, "h")),
        ("1d", Duration(1, "d")),
        ("7d", Duration(7, "d")),
        ("1w", Duration(7, "d")),
        ("2w", Duration(14, "d")),
        ("30d", Duration(30, "d")),
        ("1mo", Duration(1, "mo")),
        ("3mo", Duration(3, "mo")),
        ("daily", Duration(1, "d")),
        ("weekly", Duration(7, "d")),
        ("monthly", Duration(1, "mo")),
        ("hourly", Duration(1, "h")),
        (" 1D ", Duration(1, "d")),
    ],
)
def test_parse_duration(text, duration):
    assert parse_duration(text) == duration


@pytest.mark.parametrize("text", ["", "0d", "-1d", "1y", "d", "1.5h", "soon", None, 30, "1 d"])
def test_unparsable_duration_is_refused(text):
    with pytest.raises(ValueError, match="budget_duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("duration", "now", "reset"),
    [
        ("10s", "2026-11-27T15:00:03", "2026-11-27T15:00:10"),
        ("10s", "2026-11-27T15:00:10", "2026-11-27T15:00:20"),
        ("30s", "2026-11-27T23:59:45", "2026-11-28T00:00:00"),
        ("10m", "2026-11-27T15:07:00", "2026-11-27T15:10:00"),
        ("1h", "2026-11-27T15:07:00", "2026-11-27T16:00:00"),
        ("7h", "2026-11-27T22:00:00", "2026-11-28T04:00:00"),
        ("1d", "2026-11-27T15:07:00", "2026-11-28T00:00:00"),
        ("7d", "2026-11-27T15:07:00", "2026-11-30T00:00:00"),  # a Friday → next Monday
        ("7d", "2026-11-30T09:00:00", "2026-12-07T00:00:00"),  # on a Monday → the following Monday
        ("30d", "2026-11-27T15:07:00", "2026-12-01T00:00:00"),
        ("30d", "2026-12-15T15:07:00", "2027-01-01T00:00:00"),
        ("1mo", "2026-01-31T12:00:00", "2026-02-01T00:00:00"),
        ("3mo", "2026-11-27T12:00:00", "2027-02-01T00:00:00"),
        ("2d", "2026-11-27T15:07:00", "2026-11-29T00:00:00"),
    ],
)
def test_next_reset_follows_the_calendar_rules(duration, now, reset):
    assert next_reset(parse_duration(duration), at(now)) == at(reset)


def test_current_reset_keeps_a_future_stored_time_and_rolls_a_past_one_forward():
    duration = parse_duration("1d")
    assert current_reset(at("2026-11-28T00:00:00"), duration, at("2026-11-27T10:00:00")) == at("2026-11-28T00:00:00")
    assert current_reset(at("2026-11-20T00:00:00"), duration, at("2026-11-27T10:00:00")) == at("2026-11-28T00:00:00")
    assert current_reset(at("2026-11-28T00:00:00"), None, at("2026-11-27T10:00:00")) is None


def test_iso_round_trip():
    moment = at("2026-12-01T00:00:00")
    assert to_iso(moment) == "2026-12-01T00:00:00Z"
    assert from_iso(to_iso(moment)) == moment
    assert from_iso("2026-12-01T01:00:00+01:00") == moment
