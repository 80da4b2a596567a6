"""Admission of one LLM call, before the upstream is contacted (SPEC §8, steps 3 and 4).

Which budget applies (the customer's own, else its tier, else `max_end_user_budget_id`), what
the call can cost at worst, and the store's verdict under the customer's lock. Returns how the
call must be settled afterwards, or raises the refusal the client sees.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from config import Deployment
from errors import BadRequest, BudgetExceeded, Forbidden, ProxyError, RateLimited
from providers.base import Usage
from spend import periods
from spend.budgets import Estimate, Limit, OverBudget, OverRate, RateLimits
from spend.money import usd_text
from spend.pricing import Pricer
from spend.store import PLAIN_CALL, Admin, AdmissionRequest, Budget, Charge, Customer, Ledger, Settlement
from webhooks.events import Notify

log = logging.getLogger("tollgate.budgets")
DEFAULT_OUTPUT_LIMIT = 16384
IMAGE_TOKEN_ALLOWANCE = 2000
RESERVATION_GRACE_SECONDS = 60.0
_OUTPUT_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# Where a request carries its prompt: chat, the Responses API, text completions, embeddings.
_PROMPT_KEYS = ("messages", "tools", "functions", "input", "instructions", "prompt")


@dataclass(frozen=True)
class Admitted:
    settlement: Settlement = PLAIN_CALL
    max_tokens: int | None = None  # the output bound to send upstream (strict's, or the reservation's)
    notify: Notify | None = None  # what the call announces once charged (webhooks on), measured against its budget


def gate(customer_id: str | None, customer: Customer | None, model: object) -> object:
    """Steps 1 and 2: a blocked customer is refused, an allowlist is enforced; returns the model.

    A call that names no model gets the customer's `default_model`.
    """
    if customer is None:
        return model
    if customer.blocked:
        raise BadRequest(f"User blocked from making LLM API Calls. User={customer_id}")
    if not model and customer.default_model:
        model = customer.default_model
    if customer.models and model not in customer.models:
        raise Forbidden(
            f"The requested model '{model}' is not in the allowed models for this customer. "
            "Check the models this customer can use and try again.",
            type="customer_model_access_denied",
            param="model",
        )
    return model


def applicable_budget(admin: Admin, customer: Customer | None, default_id: str | None) -> Budget | None:
    """The customer's own budget or tier, else the default tier (`max_end_user_budget_id`).

    A default tier that does not exist never means "no limit": the call is refused (503) until the
    operator creates it, with a message naming it.
    """
    if customer is not None and customer.budget is not None:
        return customer.budget
    if not default_id:
        return None
    budget = admin.get_budget(default_id)
    if budget is None:
        raise ProxyError(
            f"No budget can be applied to this customer: the default budget tier '{default_id}' "
            "(litellm_settings.max_end_user_budget_id) does not exist. The operator must create it "
            "(POST /budget/new) before such calls are served.",
            status=503,
            type="budget_tier_missing",
            headers={"retry-after": "60"},
        )
    return budget


def window_end(reset_at: str | None, duration: str | None, now: float) -> float | None:
    """When the current window of a budget ends (epoch seconds), None for a lifetime budget.

    A duration or reset time the edge would refuse today, stored before it checked them, is read
    as a budget that never resets (logged): its limit still holds, and the customer, its budget and
    their lists stay readable until an operator edits it."""
    if not duration:
        return None
    try:
        moment = periods.current_reset(
            periods.from_iso(reset_at), periods.parse_duration(duration), datetime.fromtimestamp(now, UTC)
        )
        return moment.timestamp()
    except (ValueError, OverflowError) as exc:
        log.warning(
            "budgets: unreadable budget_duration=%r budget_reset_at=%r (%s); the budget is enforced without a reset "
            "until it is edited",
            duration,
            reset_at,
            exc,
        )
        return None


def limits_for(budget: Budget, model_keys: tuple[str, ...], now: float) -> tuple[Limit, ...]:
    """The spend limits of `budget` that apply to a call to one of `model_keys`."""
    limits = []
    if budget.max_budget_units is not None:
        end = window_end(budget.budget_reset_at, budget.budget_duration, now)
        limits.append(Limit("", budget.max_budget_units, end, budget.budget_id))
    for key in model_keys:
        entry = (budget.model_max_budget or {}).get(key)
        if entry is not None:
            end = window_end(None, entry.get("budget_duration"), now)
            limits.append(Limit(key, entry["max_budget_units"], end, budget.budget_id))
            break
    return tuple(limits)


def estimate(body: dict, pricer: Pricer, deployment: Deployment) -> Estimate:
    """The worst case of a call: every prompt byte a token, and all the output it may produce.

    `max_tokens_sent` says whether the output bound is the client's own: False when the client
    sent none, or more than the model's output limit (the bound is then that limit).
    """
    requested = next((body[key] for key in _OUTPUT_KEYS if _positive_int(body.get(key))), None)
    limit = deployment.max_output_tokens or pricer.context_window or DEFAULT_OUTPUT_LIMIT
    output = min(requested, limit) if requested else limit
    per_million = pricer.per_million_output()
    return Estimate(
        prompt_units=pricer.cost(Usage(prompt_tokens=prompt_bound(body))),
        units_per_output_token=math.ceil(per_million / 1_000_000),
        output_tokens=output,
        max_tokens_sent=output == requested,
    )


def unsent_bound(worst: Estimate, pricer: Pricer, deployment: Deployment) -> int | None:
    """The output bound a reservation relied on that the client did not send, to be sent upstream
    so no answer can overrun it; None when the client's own bound holds.

    A bound that is the model's context window is not sent: no answer can be longer than the
    window, and an upstream refuses a `max_tokens` above the model's (smaller) output limit.
    """
    if worst.max_tokens_sent:
        return None
    if not deployment.max_output_tokens and pricer.context_window:
        return None
    return worst.output_tokens


def prompt_bound(body: dict) -> int:
    """An upper bound of the prompt's tokens: a token is at least one byte of its text."""
    parts = {key: body.get(key) for key in _PROMPT_KEYS if body.get(key)}
    text = json.dumps(parts, ensure_ascii=False)
    return len(text.encode()) + IMAGE_TOKEN_ALLOWANCE * text.count('"image_url"')


def admit(
    ledger: Ledger,
    *,
    request_id: str,
    customer_id: str,
    budget: Budget | None,
    deployment: Deployment,
    pricer: Pricer,
    body: dict,
    strict: bool,
    exceeded_status: int,
    now: float,
    notify: Notify | None = None,
) -> Admitted:
    """Reserve the call against the applicable budget and limits, or raise the refusal.

    `notify` (webhooks on) is completed with the budget the call's alerts are measured against.
    """
    if budget is None:
        return Admitted(notify=notify)
    keys = (deployment.model_name, f"{deployment.provider}/{deployment.model}", deployment.model)
    limits = limits_for(budget, keys, now)
    rates = RateLimits(budget.rpm_limit, budget.tpm_limit)
    rated = rates.rpm is not None or rates.tpm is not None
    main_end = window_end(budget.budget_reset_at, budget.budget_duration, now)
    charges = (Charge("", main_end), *(Charge(limit.scope, limit.window_end) for limit in limits if limit.scope))
    notify = _measured(notify, budget, main_end)
    if not limits and not rated:
        return Admitted(Settlement(charges), notify=notify)
    worst = estimate(body, pricer, deployment)
    verdict = ledger.admit(
        AdmissionRequest(
            request_id=request_id,
            customer_id=customer_id,
            limits=limits,
            estimate=worst,
            now=now,
            expires_at=now + deployment.timeout + RESERVATION_GRACE_SECONDS,
            strict=strict,
            rate_limits=rates if rated else None,
        )
    )
    if isinstance(verdict, OverBudget):
        raise _over_budget(customer_id, verdict, exceeded_status)
    if isinstance(verdict, OverRate):
        raise _over_rate(customer_id, verdict)
    settlement = Settlement(charges, reserved=bool(limits), rate_tracked=rated)
    # Strict mode may have lowered the bound to what is left; else a reservation sends its own.
    max_tokens = verdict.max_tokens
    if max_tokens is None and limits:
        max_tokens = unsent_bound(worst, pricer, deployment)
    return Admitted(settlement, max_tokens, notify)


def _measured(notify: Notify | None, budget: Budget, end: float | None) -> Notify | None:
    """The alert context with the budget's limits and its current window."""
    if notify is None:
        return None
    start = None
    if end is not None:
        duration = periods.parse_duration(budget.budget_duration)
        start = periods.window_start(duration, datetime.fromtimestamp(end, UTC)).timestamp()
    return replace(
        notify,
        max_budget_units=budget.max_budget_units,
        soft_budget_units=budget.soft_budget_units,
        window_start=start,
        window_end=end,
    )


def _over_budget(customer_id: str, verdict: OverBudget, status: int) -> BudgetExceeded:
    where = f" for model={verdict.scope}" if verdict.scope else ""
    message = (
        f"ExceededBudget: End User={customer_id} over budget{where}. "
        f"Spend={usd_text(verdict.spend_units)}, Budget={usd_text(verdict.max_units)}"
    )
    return BudgetExceeded(message, status=status)


def _over_rate(customer_id: str, verdict: OverRate) -> RateLimited:
    resets = datetime.fromtimestamp(verdict.resets_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    message = (
        f"Rate limit exceeded for end_user: {customer_id}. Limit type: {verdict.kind}. "
        f"Current limit: {verdict.limit}, Remaining: 0. Limit resets at: {resets}"
    )
    headers = {"retry-after": str(verdict.retry_after), "rate_limit_type": verdict.kind, "reset_at": resets}
    return RateLimited(message, headers=headers)


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
