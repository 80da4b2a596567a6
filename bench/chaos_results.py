"""What the chaos bench (`bench/chaos.py`) records and how it turns that into its figures.

The calls as the clients saw them (`Outcome`) and the faults as they were done (`Record`) are
set against the database, read read-only once the outbox has drained, and the events the
webhook sink received; `report` prints the five figures and the tables beside them.
"""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.scaleout import call_units
from spend.money import usd_text

KILL_WINDOW = 5.0  # connection errors this long after a kill are counted as the kill's
MAX_TOKENS = 20  # every call's: its reservation is one call's cost, so a budget runs out at its last call
LOGS_KEPT = Path(tempfile.gettempdir())


@dataclass
class Outcome:
    """One call as the client saw it."""

    stream: bool
    status: int | str  # the HTTP status, or the exception that ended it before any status
    call_id: str | None = None
    cost: int | None = None  # units: the x-litellm-response-cost header, or a stream's usage priced
    ending: str = ""  # streams: "[DONE]", "error event", "no [DONE]"; any answer: "broken (…)" when it broke off
    ended: float = 0.0

    @property
    def complete(self) -> bool:
        return self.status == 200 and self.ending == ("[DONE]" if self.stream else "")


@dataclass
class Record:
    """What happened during the run, besides the calls."""

    kills: list[tuple[float, int]] = field(default_factory=list)
    disk_full: tuple[float, float] | None = None
    disk_full_readiness: int | str | None = None
    stalls: Counter = field(default_factory=Counter)
    hostile: Counter = field(default_factory=Counter)  # (kind, status) -> count
    skipped: list[str] = field(default_factory=list)


def near_kill(at: float, record: Record) -> bool:
    """Whether `at` (a monotonic time) falls within KILL_WINDOW after one of the run's kills."""
    return any(0 <= at - killed <= KILL_WINDOW for killed, _ in list(record.kills))


# -- reading the results --------------------------------------------------------------------


def read_database(path: Path) -> tuple[dict, Counter, dict]:
    """(success spend-log rows {request_id: (customer, cost)}, rows per request id, account spend per customer)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        rows = connection.execute("SELECT request_id, customer_id, cost_units, status FROM spend_logs").fetchall()
        accounts = connection.execute("SELECT user_id, spend_units FROM spend_accounts WHERE scope = ''").fetchall()
    connection.close()
    success = {request_id: (customer, int(cost)) for request_id, customer, cost, status in rows if status == "success"}
    per_id = Counter(request_id for request_id, *_ in rows)
    return success, per_id, {user: int(spend) for user, spend in accounts}


def budget_use(path: Path, customers: list[str], args) -> str:
    """Each budgeted customer's spend and what is still reserved, in calls of the budget of `--budget-calls` calls."""
    one_call = call_units({"prompt_tokens": 20, "completion_tokens": MAX_TOKENS})
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        rows = connection.execute("SELECT user_id, spend_units, reserved_units FROM spend_accounts WHERE scope = ''")
        accounts = {user: (int(spend), int(reserved)) for user, spend, reserved in rows.fetchall()}
    connection.close()
    return ", ".join(
        f"{c} spent {accounts.get(c, (0, 0))[0] / one_call:g} of {args.budget_calls} calls "
        f"({accounts.get(c, (0, 0))[1] / one_call:g} calls still reserved)"
        for c in customers
    )


def reservations_left(path: Path, log: str) -> str:
    """The reservations still held once every call has ended, by what the server's log says of
    their call. Each lapses at its expiry (the upstream timeout plus a minute) and holds its
    customer's budget until then."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        rows = connection.execute("SELECT request_id, user_id FROM reservations").fetchall()
    connection.close()
    kinds = Counter(fate(request_id, log) for request_id, _ in rows)
    listed = ", ".join(f"{request_id} ({user})" for request_id, user in rows[:12])
    return f"{len(rows)}: {dict(kinds)}; {listed}" if rows else "0"


def fate(request_id: str, log: str) -> str:
    """What the server's log says of a call that left a reservation behind."""
    if f"stream not charged request_id={request_id}" in log:
        return "a stream whose charge failed (store unavailable)"
    if f"store unavailable request_id={request_id}" in log:
        return "a call answered 503 after its reservation (store unavailable)"
    if f"request_id={request_id}" not in log:
        return "no log line: a call on a killed worker"
    return "other"


def outbox_waiting(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        (count,) = connection.execute("SELECT count(*) FROM webhook_events WHERE status <> 'delivered'").fetchone()
    connection.close()
    return count


def drain(path: Path, seconds: float) -> int:
    """Wait until every outbox event is delivered (at most `seconds`); the events still waiting."""
    deadline = time.monotonic() + seconds
    while (waiting := outbox_waiting(path)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return waiting


@dataclass
class Figures:
    lost: int = 0
    lost_calls: list[str] = field(default_factory=list)
    twice: int = 0
    twice_what: list[str] = field(default_factory=list)
    unbilled_streams: int = 0
    events_lost: int = 0
    events_lost_ids: list[str] = field(default_factory=list)
    bad_input_5xx: int = 0
    cost_mismatch: list[str] = field(default_factory=list)
    stray: int = 0  # success rows of no customer of the run (a stalled or hostile request charged)
    basis: dict[str, int] = field(default_factory=dict)  # what the figures were computed over

    def failed(self) -> bool:
        return bool(self.lost or self.twice or self.unbilled_streams or self.events_lost or self.bad_input_5xx)


def compute(outcomes: list[Outcome], database: tuple, events: dict, customers: list[str], record: Record) -> Figures:
    """The five figures (and what they were computed over) from the clients', the database's and
    the receiver's records."""
    success, per_id, accounts = database
    figures = Figures()
    money(figures, outcomes, success)
    charged_twice(figures, success, per_id, accounts, customers)
    delivered = {event_id[-20:] for event_id, event in events.items() if event[0] == "spend_tracked"}
    for request_id, (customer, _) in success.items():
        if customer in customers and hashlib.sha256(request_id.encode()).hexdigest()[:20] not in delivered:
            figures.events_lost += 1
            figures.events_lost_ids.append(request_id)
    hostile = record.hostile.items()
    figures.bad_input_5xx = sum(n for (_, status), n in hostile if isinstance(status, int) and status >= 500)
    figures.stray = sum(1 for owner, _ in success.values() if owner not in customers)
    figures.basis = basis(outcomes, success, events)
    return figures


def money(figures: Figures, outcomes: list[Outcome], success: dict) -> None:
    """Money lost and complete streams unbilled: calls answered complete without a success row."""
    for outcome in filter(lambda o: o.complete, outcomes):
        row = success.get(outcome.call_id)
        if row is None:
            figures.lost += outcome.cost or 0
            figures.lost_calls.append(f"{outcome.call_id} ({'stream' if outcome.stream else 'plain'})")
            figures.unbilled_streams += outcome.stream
        elif outcome.cost is not None and row[1] != outcome.cost:
            figures.cost_mismatch.append(f"{outcome.call_id}: answered {outcome.cost}, charged {row[1]}")


def charged_twice(figures: Figures, success: dict, per_id: Counter, accounts: dict, customers: list[str]) -> None:
    """A request id with more than one spend-log row, and each account that differs from its spend log."""
    for request_id, count in per_id.items():
        if count > 1:
            figures.twice += (count - 1) * success.get(request_id, (None, 0))[1]
            figures.twice_what.append(f"{request_id} has {count} rows")
    for customer in customers:
        logged = sum(cost for owner, cost in success.values() if owner == customer)
        if accounts.get(customer, 0) != logged:
            figures.twice += abs(accounts.get(customer, 0) - logged)
            figures.twice_what.append(f"{customer}: account {accounts.get(customer, 0)}, spend log {logged}")


def basis(outcomes: list[Outcome], success: dict, events: dict) -> dict[str, int]:
    complete = {outcome.call_id for outcome in outcomes if outcome.complete}
    tracked = sum(1 for event in events.values() if event[0] == "spend_tracked")
    return {
        "calls answered complete (200 plain, or a stream that ended with [DONE])": len(complete),
        "success spend-log rows": len(success),
        "of which calls not answered complete (streams cut by the upstream and charged for what was relayed, "
        "answers lost to a kill after their charge)": len(set(success) - complete),
        "spend_tracked events received by the sink (distinct)": tracked,
        "other events received (budget alerts)": len(events) - tracked,
        "events that arrived more than once (at-least-once delivery)": sum(1 for e in events.values() if e[3] > 1),
    }


# -- the report -----------------------------------------------------------------------------


def table(title: str, counts: Counter) -> None:
    print(f"\n{title}\n\n| outcome | count |\n|---|---:|")
    for outcome, count in sorted(counts.items(), key=lambda item: (-item[1], str(item[0]))):
        print(f"| {outcome} | {count} |")


def call_outcomes(outcomes: list[Outcome], record: Record) -> Counter:
    """Calls by outcome; connection errors within KILL_WINDOW of a kill are named as the kill's."""
    counts = Counter()
    for outcome in outcomes:
        kind = "stream" if outcome.stream else "plain"
        if isinstance(outcome.status, str):
            near = " during a kill" if near_kill(outcome.ended, record) else ""
            counts[f"{kind}: no answer ({outcome.status}){near}"] += 1
        elif outcome.ending:
            near = " during a kill" if outcome.ending.startswith("broken") and near_kill(outcome.ended, record) else ""
            counts[f"{kind}: {outcome.status}, {outcome.ending}{near}"] += 1
        else:
            counts[f"{kind}: {outcome.status}"] += 1
    return counts


def hostile_table(answers: Counter) -> None:
    """The hostile requests by kind, with the answers each got."""
    kinds: dict[str, Counter] = {}
    for (kind, status), count in answers.items():
        kinds.setdefault(kind, Counter())[status] += count
    print("\n## Hostile requests by kind\n\n| request | answers |\n|---|---|")
    for kind, statuses in kinds.items():
        print(f"| {kind} | {', '.join(f'{status} x{count}' for status, count in statuses.most_common())} |")


def in_window(outcomes: list[Outcome], window: tuple[float, float] | None) -> Counter:
    if window is None:
        return Counter()
    return Counter(str(o.status) for o in outcomes if window[0] <= o.ended <= window[1] + 1.0)


def report(figures: Figures, outcomes: list[Outcome], record: Record, waiting: int, extras: dict) -> None:
    print("\n## The figures\n\n| figure | value |\n|---|---:|")
    print(f"| money lost | ${usd_text(figures.lost)} |")
    print(f"| money charged twice | ${usd_text(figures.twice)} |")
    print(f"| complete streams unbilled | {figures.unbilled_streams} |")
    print(f"| webhook events lost | {figures.events_lost} |")
    print(f"| 5xx from bad input | {figures.bad_input_5xx} |")
    for name, items in (("calls answered complete without a success row", figures.lost_calls),
                        ("charged twice", figures.twice_what), ("events lost (request ids)", figures.events_lost_ids),
                        ("charge differs from the cost answered", figures.cost_mismatch)):  # fmt: skip
        if items:
            print(f"\n{name} ({len(items)}): {', '.join(items[:20])}{' …' if len(items) > 20 else ''}")
    table("## Calls by outcome", call_outcomes(outcomes, record))
    table("## Stalled uploads by outcome", record.stalls)
    hostile_table(record.hostile)
    print("\n## Faults\n")
    print(f"- worker SIGKILLs: {len(record.kills)} (pids {', '.join(str(pid) for _, pid in record.kills)})")
    if record.disk_full:
        began, ended = record.disk_full
        print(f"- disk full for {ended - began:.1f} s; readiness meanwhile: {record.disk_full_readiness}; "
              f"calls ended meanwhile by status: {dict(in_window(outcomes, record.disk_full))}")  # fmt: skip
    for line in record.skipped:
        print(f"- skipped: {line}")
    for name, value in extras.items():
        print(f"- {name}: {value}")
    print(f"- outbox events not delivered after the drain: {waiting}")
    print(f"- success spend-log rows of no customer of the run (stalled or hostile requests charged): {figures.stray}")
    print("\n## What the figures are computed over\n")
    for name, value in figures.basis.items():
        print(f"- {name}: {value}")


def log_summary(server, run_id: str) -> str:
    """Keep the server's log beside the other temporary files; one line on what it holds."""
    text = server.log()
    kept = LOGS_KEPT / f"tollgate-chaos-{run_id}.log"
    kept.write_text(text)
    errors = sum(1 for line in text.splitlines() if " ERROR " in line or "[ERROR]" in line)
    uncharged = text.count("stream not charged")
    return f"{kept} ({errors} ERROR lines, {text.count('Traceback')} tracebacks, {uncharged} 'stream not charged')"
