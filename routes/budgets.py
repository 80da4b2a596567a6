"""Budget tiers (`/budget/*`): LiteLLM's routes, with every error in the OpenAI envelope.

A tier is shared: each customer linked to it gets its limits, and spends against them separately.
Deleting a tier unlinks its customers.
"""

from __future__ import annotations

import uuid

from flask import Blueprint, jsonify

import gateway as gateway_state
from errors import BadRequest, NotFound
from routes import fields, json_body
from routes.audit import admin_action, field_names
from routes.customers import budget_object
from spend.store import Conflict, Missing

blueprint = Blueprint("budgets", __name__)


@blueprint.post("/budget/new")
def budget_new():
    body = json_body()
    gw = gateway_state.current()
    budget_id = fields.text(body.get("budget_id"), "budget_id") or str(uuid.uuid4())
    columns = fields.budget_columns(body, nulls_clear=False)
    try:
        budget = gw.store.admin.create_budget(budget_id, columns, gw.clock())
    except Conflict:
        raise BadRequest(f"Budget with id '{budget_id}' already exists.", param="budget_id") from None
    admin_action("budget.new", [budget_id], field_names(budget=columns))
    return jsonify(budget_object(budget, gw.clock()))


@blueprint.post("/budget/update")
def budget_update():
    body = json_body()
    gw = gateway_state.current()
    budget_id = fields.text(body.get("budget_id"), "budget_id")
    if not budget_id:
        raise BadRequest("budget_id is required", param="budget_id")
    columns = fields.budget_columns(body, nulls_clear=True)
    try:
        budget = gw.store.admin.update_budget(budget_id, columns, gw.clock())
    except Missing:
        raise _not_found(budget_id) from None
    admin_action("budget.update", [budget_id], field_names(budget=columns))
    return jsonify(budget_object(budget, gw.clock()))


@blueprint.post("/budget/info")
def budget_info():
    body = json_body()
    budget_ids = body.get("budgets")
    if not isinstance(budget_ids, list) or not budget_ids or not all(fields.is_text(b) for b in budget_ids):
        raise BadRequest(f"Specify list of budget id's to query. Passed in={budget_ids!r}", param="budgets")
    gw = gateway_state.current()
    now = gw.clock()
    return jsonify([budget_object(budget, now) for budget in gw.store.admin.list_budgets(budget_ids)])


@blueprint.get("/budget/list")
def budget_list():
    gw = gateway_state.current()
    now = gw.clock()
    return jsonify([budget_object(budget, now) for budget in gw.store.admin.list_budgets()])


@blueprint.post("/budget/delete")
def budget_delete():
    body = json_body()
    budget_id = fields.text(body.get("id"), "id")
    if not budget_id:
        raise BadRequest("id is required: the budget_id to delete", param="id")
    gw = gateway_state.current()
    try:
        budget = gw.store.admin.delete_budget(budget_id)
    except Missing:
        raise _not_found(budget_id) from None
    admin_action("budget.delete", [budget_id])
    return jsonify(budget_object(budget, gw.clock()))


def _not_found(budget_id: str) -> NotFound:
    return NotFound(f"Budget id={budget_id} does not exist in db", param="budget_id")
