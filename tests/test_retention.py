"""Spend-log retention (`general_settings.maximum_spend_logs_retention_period`): old rows go, in
batches, on both engines; recent rows, spend, budgets and the daily rollup stay."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from app import start_background_work, stop_background_work
from config import ConfigError, load_config
from providers.base import Usage
from spend.retention import Retention
from spend.store import CallRecord
from tests.helpers import MASTER_KEY, write_config

DAY = 86_400.0
NOW = 1_800_000_000.0  # 2027-01-15
WEEK_AGO = NOW - 7 * DAY


def call(request_id: str, at: float, customer: str = "keeper", cost: int = 1_000_000) -> CallRecord:
    return CallRecord(
        request_id=request_id,
        customer_id=customer,
        model_group="gpt",
        provider_model="openai/gpt",
        deployment_id="dep",
        usage=Usage(prompt_tokens=10, completion_tokens=5),
        cost_units=cost,
        started_at=at,
        ended_at=at,
    )


def write_calls(store, old: int, recent: int, now: float = NOW) -> None:
    """`old` calls 8 to 30 days before `now`, and `recent` ones in the last day."""
    for index in range(old):
        store.ledger.record_call(call(f"old-{index}", now - 8 * DAY - index * 3600))
    for index in range(recent):
        store.ledger.record_call(call(f"new-{index}", now - DAY + index))


def request_ids(store) -> list[str]:
    return sorted(row.request_id for row in store.ledger.spend_logs(limit=10_000))


def test_old_rows_are_deleted_a_batch_per_call_and_recent_ones_kept(contract_store):
    write_calls(contract_store, old=7, recent=3)
    batches = [contract_store.ledger.delete_spend_logs_before(WEEK_AGO, 3) for _ in range(4)]
    assert batches == [3, 3, 1, 0]
    assert request_ids(contract_store) == ["new-0", "new-1", "new-2"]


def test_a_row_created_at_the_cutoff_is_kept(contract_store):
    contract_store.ledger.record_call(call("at-cutoff", WEEK_AGO))
    contract_store.ledger.record_call(call("just-before", WEEK_AGO - 0.001))
    assert contract_store.ledger.delete_spend_logs_before(WEEK_AGO, 100) == 1
    assert request_ids(contract_store) == ["at-cutoff"]


def test_pruning_keeps_spend_and_the_daily_rollup(contract_store):
    write_calls(contract_store, old=4, recent=1)
    old_day = datetime.fromtimestamp(NOW - 8 * DAY, UTC).strftime("%Y-%m-%d")
    rollup_before = contract_store.ledger.daily_activity(["keeper"], old_day, old_day)
    assert Retention(contract_store.ledger, 7 * DAY, clock=lambda: NOW).prune() == 4
    assert contract_store.admin.get_customer("keeper").spend_units == 5 * 1_000_000
    assert contract_store.ledger.daily_activity(["keeper"], old_day, old_day) == rollup_before != []


def test_prune_deletes_every_old_row_in_batches(contract_store):
    write_calls(contract_store, old=9, recent=2)
    retention = Retention(contract_store.ledger, 7 * DAY, clock=lambda: NOW, batch=2)
    assert retention.prune() == 9
    assert retention.prune() == 0
    assert request_ids(contract_store) == ["new-0", "new-1"]


def test_workers_pruning_at_once_delete_each_row_once(contract_store):
    write_calls(contract_store, old=40, recent=2)
    counts: list[int] = []
    workers = [
        threading.Thread(
            target=lambda: counts.append(Retention(contract_store.ledger, 7 * DAY, clock=lambda: NOW, batch=5).prune())
        )
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert sum(counts) == 40
    assert request_ids(contract_store) == ["new-0", "new-1"]


def test_a_worker_prunes_in_the_background_when_a_period_is_set(make_app):
    app = make_app(general_settings={"maximum_spend_logs_retention_period": "7d"})
    store = app.extensions["tollgate"].store
    write_calls(store, old=3, recent=2, now=time.time())
    start_background_work(app)
    try:
        deadline = time.monotonic() + 10
        while request_ids(store) != ["new-0", "new-1"] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop_background_work(app)
    assert request_ids(store) == ["new-0", "new-1"]


def test_without_a_period_every_row_is_kept(make_app):
    app = make_app()
    assert app.extensions["tollgate.retention"] is None
    assert app.extensions["tollgate"].config.spend_log_retention_seconds is None


def settings(tmp_path, **general):
    path = write_config(tmp_path, general_settings=general)
    return load_config(str(path), {"LITELLM_MASTER_KEY": MASTER_KEY})


@pytest.mark.parametrize(
    ("period", "seconds"),
    [("7d", 7 * DAY), ("24h", DAY), ("60m", 3600.0), ("3600s", 3600.0), ("2w", 14 * DAY), (" 30D ", 30 * DAY)],
)
def test_litellm_periods_are_read(tmp_path, period, seconds):
    config = settings(tmp_path, maximum_spend_logs_retention_period=period, maximum_spend_logs_retention_interval="1h")
    assert config.spend_log_retention_seconds == seconds
    assert config.spend_log_retention_interval_seconds == 3600.0
    assert config.warnings == ()


@pytest.mark.parametrize("period", ["7", "7x", "0d", "-1d", "1.5d", "1mo", "", "٧d", 7, True, "36526d"])
@pytest.mark.parametrize("key", ["maximum_spend_logs_retention_period", "maximum_spend_logs_retention_interval"])
def test_a_bad_period_is_a_config_error_naming_the_key(tmp_path, key, period):
    with pytest.raises(ConfigError) as refused:
        settings(tmp_path, **{key: period})
    assert [problem for problem in refused.value.problems if problem.startswith(f"general_settings.{key}: must be")]


def test_the_interval_defaults_to_a_day(tmp_path):
    assert settings(tmp_path, maximum_spend_logs_retention_period="30d").spend_log_retention_interval_seconds == DAY
