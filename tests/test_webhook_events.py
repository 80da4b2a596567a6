"""Webhook payloads and when budget events fire (pure)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from webhooks.dispatcher import backoff, signature_headers
from webhooks.events import Event, Notify, budget_events, iso, new_event_id, spend_tracked


def for_charge(notify: Notify, customer_id: str, cost_units: int, spend_units: int, now: float) -> list[Event]:
    """The events the store writes for one charged call: its `spend_tracked` event, then the
    budget events its customer's spend after it (`spend_units`) crosses into."""
    tracked = [spend_tracked(notify, customer_id, cost_units, now)] if notify.spend_tracked else []
    return tracked + budget_events(notify, customer_id, spend_units, now)


SEED_KEYS = [
    "spend",
    "max_budget",
    "token",
    "customer_id",
    "user_id",
    "team_id",
    "user_email",
    "key_alias",
    "projected_exceeded_date",
    "projected_spend",
    "event",
    "event_group",
    "event_message",
]
UNIT = 10**12
NOW = 1_795_795_200.0


def bodies(events):
    return [json.loads(event.body) for event in events]


def test_spend_tracked_payload_has_the_seed_keys_in_order():
    [event] = for_charge(Notify(token="abc", budget_alerts=False), "krrish12", 1_112_000_000, 1_112_000_000, NOW)
    body = json.loads(event.body)
    assert list(body)[: len(SEED_KEYS)] == SEED_KEYS
    assert list(body)[len(SEED_KEYS) :] == ["soft_budget", "event_id", "created_at"]
    assert body["spend"] == 0.001112 and '"spend":0.001112' in event.body
    assert body["event"] == "spend_tracked" and body["event_group"] == "customer"
    assert body["event_message"] == "Customer spend tracked. Customer=krrish12, spend=0.001112"
    assert body["event_id"] == event.event_id and event.mark is None
    assert (body["customer_id"], body["token"], body["created_at"]) == ("krrish12", "abc", "2026-11-27T16:00:00Z")


@pytest.mark.parametrize(
    ("spend", "expected"),
    [
        (Decimal("0.5"), []),
        (Decimal("0.85"), ["threshold_crossed"]),
        (Decimal("0.96"), ["threshold_crossed", "threshold_crossed"]),
        (Decimal("1"), ["threshold_crossed", "threshold_crossed", "budget_crossed"]),
    ],
)
def test_budget_events_by_spend(spend, expected):
    notify = Notify(
        token=None, spend_tracked=False, thresholds=(Decimal("0.85"), Decimal("0.95")), max_budget_units=UNIT
    )
    events = for_charge(notify, "c", 1, int(spend * UNIT), NOW)
    assert [event.event for event in events] == expected
    assert all(json.loads(e.body)["max_budget"] == 1 for e in events)
    assert len({event.mark for event in events}) == len(events)


def test_soft_budget_event():
    notify = Notify(token=None, spend_tracked=False, soft_budget_units=UNIT // 2)
    [event] = for_charge(notify, "c", 1, UNIT // 2, NOW)
    assert event.event == "soft_budget_crossed" and json.loads(event.body)["soft_budget"] == 0.5


def test_projection_fires_when_the_pace_would_pass_the_budget():
    day = 86400.0
    notify = Notify(token=None, spend_tracked=False, max_budget_units=UNIT, window_start=NOW, window_end=NOW + day)
    assert for_charge(notify, "c", 1, UNIT // 10, NOW + day / 20) == []  # too early in the window to tell
    [event] = for_charge(notify, "c", 1, UNIT // 2, NOW + day / 4)
    body = json.loads(event.body)
    assert event.event == "projected_limit_exceeded"
    assert body["projected_spend"] == 2
    assert body["projected_exceeded_date"] == "2026-11-28T04:00:00Z"  # half the budget in 6 h → all in 12 h
    assert for_charge(notify, "c", 1, UNIT // 5, NOW + day / 2) == []  # on pace for 0.4


def test_no_budget_no_budget_events():
    assert for_charge(Notify(token=None, spend_tracked=False), "c", 5, 10**15, NOW) == []


def verify(secret: str, headers: dict, body: bytes) -> bool:
    """What a receiver does (docs/webhooks.md)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(f"v1,{expected}", part) for part in headers["webhook-signature"].split())


def test_signature_verifies_with_the_secret_only():
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    body = '{"event":"spend_tracked"}'
    headers = signature_headers(secret, "evt_1", 1_795_795_200, body)
    assert verify(secret, headers, body.encode())
    wrong = "whsec_" + base64.b64encode(b"another secret of the same size.").decode()
    assert not verify(wrong, headers, body.encode())
    assert not verify(secret, headers, body.encode() + b" ")


def test_backoff_doubles_with_jitter_and_a_ceiling():
    import random

    rng = random.Random(7)
    for attempts, base in [(1, 1), (2, 2), (5, 16), (30, 60)]:
        delay = backoff(attempts, 60, rng)
        assert base * 0.5 <= delay <= base * 1.5


@pytest.mark.parametrize(
    "customer_id",
    ["krrish12", 'quote " and \\ backslash', "ünïcödé 顧客", "control \x01\n\t", "</script>"],
)
def test_payloads_are_json_with_every_amount_exact_and_in_plain_notation(customer_id):
    notify = Notify(
        token=None if customer_id == "krrish12" else "tok",
        thresholds=(Decimal("0.85"),),
        max_budget_units=10 * UNIT,
        soft_budget_units=UNIT // 100_000,  # 0.00001 USD: Python's repr would write 1e-05
        window_start=NOW - 10_000,  # half the window gone at 90% of the budget: projected to pass it
        window_end=NOW + 10_000,
    )
    events = for_charge(notify, customer_id, 4, 9 * UNIT, NOW)
    assert [event.event for event in events] == [
        "spend_tracked",
        "threshold_crossed",
        "projected_limit_exceeded",
        "soft_budget_crossed",
    ]
    for event in events:
        payload = json.loads(event.body, parse_float=Decimal)
        assert payload["customer_id"] == customer_id
        assert list(payload) == [*SEED_KEYS, "soft_budget", "event_id", "created_at"]
        assert payload["soft_budget"] == Decimal("0.00001") and payload["max_budget"] == 10
        assert "e-" not in event.body.replace(customer_id, "") and "E-" not in event.body
    assert json.loads(events[0].body, parse_float=Decimal)["spend"] == Decimal("0.000000000004")
    assert '"spend":9,' in events[1].body and '"projected_spend":18,' in events[2].body


def test_event_ids_are_distinct_and_in_creation_order_and_times_are_utc_whole_seconds():
    ids = {event.event_id for _ in range(1000) for event in for_charge(Notify(token=None), "c", 1, 1, NOW)}
    assert len(ids) == 1000 and all(re.fullmatch(r"evt_[0-9a-f]{32}", event_id) for event_id in ids)
    times = [NOW - 86_400, NOW - 0.005, NOW, NOW + 0.005, NOW + 3600]
    in_order = [new_event_id(moment) for moment in times]
    assert in_order == sorted(in_order)
    for epoch in (0.0, 1_795_795_200.999, 951_782_400.5, 4_102_444_799.0):  # 2000-02-29 among them
        assert iso(epoch) == datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
