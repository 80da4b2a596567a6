"""The customer API (`/customer/*`, also under `/end_user/*`): LiteLLM's shapes and messages."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

import gateway as gateway_state
from errors import BadRequest, NotFound
from spend.pricing import usd
from spend.store import Budget, Customer

blueprint = Blueprint("customers", __name__)


def customer_object(customer: Customer) -> dict:
    """The customer as `/customer/info` shows it: the seed's keys first, every key present."""
    return {
        "user_id": customer.user_id,
        "blocked": customer.blocked,
        "alias": customer.alias,
        "spend": usd(customer.spend_units),
        "allowed_model_region": customer.allowed_model_region,
        "default_model": customer.default_model,
        "models": list(customer.models),
        "budget_id": customer.budget.budget_id if customer.budget else None,
        "litellm_budget_table": budget_object(customer.budget) if customer.budget else None,
    }


def budget_object(budget: Budget) -> dict:
    return {
        "budget_id": budget.budget_id,
        "max_budget": _usd_or_none(budget.max_budget_units),
        "soft_budget": _usd_or_none(budget.soft_budget_units),
        "tpm_limit": budget.tpm_limit,
        "rpm_limit": budget.rpm_limit,
        "model_max_budget": budget.model_max_budget,
        "budget_duration": budget.budget_duration,
        "budget_reset_at": budget.budget_reset_at,
        "created_at": budget.created_at,
    }


def _usd_or_none(units: int | None) -> float | None:
    return None if units is None else usd(units)


@blueprint.get("/customer/info")
@blueprint.get("/end_user/info")
def customer_info():
    user_id = request.args.get("end_user_id")
    if user_id is None or not user_id.strip():
        raise BadRequest("Missing query parameter end_user_id", param="end_user_id")
    customer = gateway_state.current().store.get_customer(user_id.strip())
    if customer is None:
        raise NotFound(f"End User Id={user_id} does not exist in db", param="end_user_id")
    return jsonify(customer_object(customer))
