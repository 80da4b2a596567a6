"""The customer API (`/customer/*`, also under `/end_user/*`): LiteLLM's routes, shapes and messages.

Where LiteLLM is broken Tollgate does the right thing: block answers 200, unblock clears the
stored flag, update keeps `budget_duration` and honours `max_budget: 0`, and changing a budget
field of a customer in a shared tier gives that customer its own budget instead of editing the tier.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, jsonify

import gateway as gateway_state
from errors import BadRequest, NotFound
from routes import fields, json_body, page_arg, text_arg
from routes.audit import admin_action, field_names
from spend.admission import window_end
from spend.budgets import Account, effective_spend
from spend.money import usd, usd_or_none
from spend.periods import to_iso
from spend.store import Budget, Conflict, Customer, Missing

blueprint = Blueprint("customers", __name__)
MAX_PAGE_SIZE = 100


def customer_route(path: str, methods: list[str]):
    """Register a view at `/customer/<path>` and `/end_user/<path>`."""

    def register(view):
        for prefix in ("customer", "end_user"):
            blueprint.add_url_rule(f"/{prefix}/{path}", f"{prefix}_{path}", view, methods=methods)
        return view

    return register


def customer_object(customer: Customer, now: float) -> dict:
    """The customer as LiteLLM shows it: the seed's keys first, every key present."""
    account = Account(customer.spend_units, 0, customer.spend_period_end)
    return {
        "user_id": customer.user_id,
        "blocked": customer.blocked,
        "alias": customer.alias,
        "spend": usd(effective_spend(account, now)),
        "allowed_model_region": customer.allowed_model_region,
        "default_model": customer.default_model,
        "models": list(customer.models),
        "budget_id": customer.budget.budget_id if customer.budget else None,
        "litellm_budget_table": budget_object(customer.budget, now) if customer.budget else None,
    }


def budget_object(budget: Budget, now: float) -> dict:
    """A budget row; `budget_reset_at` is the end of the current window."""
    end = window_end(budget.budget_reset_at, budget.budget_duration, now)
    return {
        "budget_id": budget.budget_id,
        "max_budget": usd_or_none(budget.max_budget_units),
        "soft_budget": usd_or_none(budget.soft_budget_units),
        "tpm_limit": budget.tpm_limit,
        "rpm_limit": budget.rpm_limit,
        "model_max_budget": fields.show_model_max_budget(budget.model_max_budget),
        "budget_duration": budget.budget_duration,
        "budget_reset_at": to_iso(datetime.fromtimestamp(end, UTC)) if end is not None else None,
        "created_at": budget.created_at,
    }


@customer_route("info", ["GET"])
def customer_info():
    user_id = text_arg("end_user_id")
    if user_id is None or not user_id.strip():
        raise BadRequest("Missing query parameter end_user_id", param="end_user_id")
    gw = gateway_state.current()
    customer = gw.store.admin.get_customer(user_id.strip())
    if customer is None:
        raise NotFound(f"End User Id={user_id} does not exist in db", param="end_user_id")
    return jsonify(customer_object(customer, gw.clock()))


@customer_route("new", ["POST"])
def customer_new():
    body = json_body()
    gw = gateway_state.current()
    user_id = fields.customer_id(body.get("user_id"))
    budget = fields.budget_columns(body, nulls_clear=False)
    given = _customer_changes(body)
    budget_id = given.get("budget_id")
    _one_budget_source(budget_id, budget)
    customer = Customer(
        user_id=user_id,
        spend_units=given.get("spend_units", 0),
        blocked=given.get("blocked", False),
        alias=given.get("alias"),
        allowed_model_region=given.get("allowed_model_region"),
        default_model=given.get("default_model"),
        models=tuple(given.get("models", ())),
        budget=Budget(budget_id) if budget_id is not None else None,
    )
    try:
        created = gw.store.admin.create_customer(customer, budget or None, gw.clock())
    except Conflict:
        raise BadRequest(
            f"Customer already exists, passed user_id={user_id}. Please pass a new user_id.",
            param="user_id",
            type="bad_request",
        ) from None
    except Missing:
        raise BadRequest(f"Budget id={budget_id} does not exist in db", param="budget_id") from None
    admin_action("customer.new", [user_id], field_names(given, budget))
    return jsonify(customer_object(created, gw.clock()))


@customer_route("update", ["POST"])
def customer_update():
    updated = update_customer(json_body())
    return jsonify(customer_object(updated, gateway_state.current().clock()))


def update_customer(body: dict) -> Customer:
    """`/customer/update` with a parsed body: every field checked, then one store update. The
    dashboard's edit form goes through here too, so both say the same thing about a bad value."""
    gw = gateway_state.current()
    user_id = fields.customer_id(body.get("user_id"))
    budget = fields.budget_columns(body, nulls_clear=False)
    changes = _customer_changes(body)
    _one_budget_source(changes.get("budget_id"), budget)
    try:
        updated = gw.store.admin.update_customer(user_id, changes, budget, gw.clock())
    except Missing as missing:
        if missing.ids == [user_id]:
            raise NotFound(f"End User Id={user_id} does not exist in db", param="user_id") from None
        raise BadRequest(f"Budget id={changes.get('budget_id')} does not exist in db", param="budget_id") from None
    admin_action("customer.update", [user_id], field_names(changes, budget))
    return updated


def _one_budget_source(budget_id: str | None, budget: dict) -> None:
    """A customer gets a tier (`budget_id`) or budget fields of its own, not both at once."""
    if budget_id is not None and budget:
        names = [name for name, column in fields.BUDGET_FIELDS.items() if column in budget]
        shown = "'max_budget'" if "max_budget" in names else ", ".join(f"'{name}'" for name in names)
        raise BadRequest(f"Set either {shown} or 'budget_id', not both.", param="budget_id")


def _customer_changes(body: dict) -> dict:
    """The customer fields the body sets, checked; a null is the same as leaving a field out."""
    readers = {
        "alias": lambda v: fields.text(v, "alias"),
        "blocked": lambda v: fields.boolean(v, "blocked"),
        "allowed_model_region": fields.region,
        "default_model": _configured_model,
        "models": lambda v: fields.string_list(v, "models"),
        "budget_id": lambda v: fields.text(v, "budget_id"),
        "spend": lambda v: fields.money(v, "spend"),
    }
    changes = {name: read(body[name]) for name, read in readers.items() if body.get(name) is not None}
    if "spend" in changes:
        changes["spend_units"] = changes.pop("spend")
    return changes


def _configured_model(value) -> str | None:
    model = fields.text(value, "default_model")
    router = gateway_state.current().router
    names = router.model_names()
    if model is not None and not router.serves(model):
        raise BadRequest(
            f"Default Model not on proxy. Configure via config.yaml. Default_model={model}, "
            f"proxy_model_names={sorted(names)}",
            param="default_model",
        )
    return model


@customer_route("delete", ["POST"])
def customer_delete():
    user_ids = fields.user_ids(json_body())
    try:
        deleted = gateway_state.current().store.admin.delete_customers(user_ids)
    except Missing as missing:
        raise NotFound(f"End User Id(s)={','.join(missing.ids)} do not exist in db", param="user_ids") from None
    admin_action("customer.delete", user_ids)
    return jsonify({"deleted_customers": deleted, "message": f"Successfully deleted customers with ids: {user_ids}"})


@customer_route("list", ["GET"])
def customer_list():
    page = page_arg("page", 1, None)
    page_size = page_arg("page_size", 50, MAX_PAGE_SIZE)
    search = text_arg("search")
    gw = gateway_state.current()
    customers, total = gw.store.admin.list_customers((page - 1) * page_size, page_size, search)
    now = gw.clock()
    response = jsonify([customer_object(customer, now) for customer in customers])
    response.headers["x-total-count"] = str(total)
    return response


@customer_route("block", ["POST"])
def customer_block():
    return _set_blocked(True)


@customer_route("unblock", ["POST"])
def customer_unblock():
    return _set_blocked(False)


def _set_blocked(blocked: bool):
    customers = set_blocked(json_body(), blocked)
    now = gateway_state.current().clock()
    return jsonify({"blocked_users": [customer_object(customer, now) for customer in customers]})


def set_blocked(body: dict, blocked: bool) -> list[Customer]:
    """`/customer/block` or `/customer/unblock` with a parsed body (also the dashboard's buttons)."""
    user_ids = fields.user_ids(body)
    gw = gateway_state.current()
    try:
        customers = gw.store.admin.set_blocked(user_ids, blocked, gw.clock())
    except Missing as missing:
        raise NotFound(f"End User Id(s)={','.join(missing.ids)} do not exist in db", param="user_ids") from None
    admin_action("customer.block" if blocked else "customer.unblock", user_ids)
    return customers
