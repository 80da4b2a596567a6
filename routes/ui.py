"""`/ui`: the operator's dashboard, HTML pages rendered on the server from `templates/ui/`.

Log in with the master key (`routes.ui_session` says how the session is kept); then the
customers list (search by id or alias, pages of 50), and a customer's page: spend per day, recent
calls, block / unblock and the budget form. Those actions go through the same functions as
`/customer/block`, `/customer/unblock` and `/customer/update` (`routes.customers`), so a value the
API refuses the dashboard refuses with the same message, and nothing is written before it is read.
"""

from __future__ import annotations

import json
import math

from flask import Blueprint, flash, redirect, render_template, request, url_for

import gateway as gateway_state
from errors import BadRequest, NotFound, ProxyError
from routes import customers, page_arg, text_arg, ui_session, ui_view
from spend.money import usd_text

blueprint = Blueprint(
    "ui",
    __name__,
    url_prefix="/ui",
    template_folder="../templates",
    static_folder="../static",
    static_url_path="/static",
)
PAGE_SIZE = 50
RECENT_CALLS = 20
PUBLIC_ENDPOINTS = frozenset({"ui.login", "ui.static"})


@blueprint.before_request
def require_login():
    """Nothing but the login page (and the stylesheet) before login; a POST needs its CSRF token."""
    if request.method == "POST":
        ui_session.check_csrf()
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if not ui_session.logged_in(gateway_state.current().clock()):
        return redirect(url_for("ui.login"))
    return None


@blueprint.after_request
def harden(response):
    """Pages that are never cached, framed, or allowed to load anything but our own stylesheet."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@blueprint.context_processor
def form_token():
    return {"csrf_token": ui_session.csrf_token, "csrf_field": ui_session.CSRF_FIELD}


@blueprint.get("/")
def home():
    return redirect(url_for("ui.customer_list"))


@blueprint.route("/login", methods=["GET", "POST"])
def login():
    gw = gateway_state.current()
    if request.method == "GET":
        if ui_session.logged_in(gw.clock()):
            return redirect(url_for("ui.customer_list"))
        return render_template("ui/login.html", error=None)
    if not ui_session.key_matches(request.form.get("master_key", ""), gw.config.master_key):
        return render_template("ui/login.html", error="Wrong master key."), 401
    ui_session.log_in(gw.clock())
    return redirect(url_for("ui.customer_list"))


@blueprint.post("/logout")
def logout():
    ui_session.log_out()
    return redirect(url_for("ui.login"))


@blueprint.get("/customers")
def customer_list():
    search = text_arg("q")
    page = page_arg("page", 1, None)
    gw = gateway_state.current()
    found, total = gw.store.admin.list_customers((page - 1) * PAGE_SIZE, PAGE_SIZE, search.strip() if search else None)
    now = gw.clock()
    rows = [(customer, ui_view.budget_view(customer, now)) for customer in found]
    return render_template(
        "ui/customers.html",
        rows=rows,
        search=search or "",
        page=page,
        pages=max(1, math.ceil(total / PAGE_SIZE)),
        total=total,
        first=(page - 1) * PAGE_SIZE + 1 if found else 0,
        last=(page - 1) * PAGE_SIZE + len(found),
    )


@blueprint.get("/customer")
def customer_page():
    return _render_customer(_customer_id(request.args.get("id")))


def _render_customer(user_id: str, error: str | None = None, status: int = 200):
    gw = gateway_state.current()
    customer = gw.store.admin.get_customer(user_id)
    if customer is None:
        raise NotFound(f"End User Id={user_id} does not exist in db", param="id")
    now = gw.clock()
    first, last = ui_view.chart_days(now)
    chart = ui_view.spend_chart(ui_view.daily_spend(gw.store.ledger, user_id, first, last))
    page = render_template(
        "ui/customer.html",
        customer=customer,
        view=ui_view.budget_view(customer, now),
        chart=chart,
        calls=gw.store.ledger.spend_logs(user_id, limit=RECENT_CALLS),
        usd_text=usd_text,
        error=error,
    )
    return page, status


def _customer_id(value) -> str:
    if not value or not value.strip():
        raise BadRequest("Missing query parameter id", param="id")
    return value.strip()


@blueprint.post("/customer/block")
def block():
    return _set_blocked(True)


@blueprint.post("/customer/unblock")
def unblock():
    return _set_blocked(False)


def _set_blocked(blocked: bool):
    user_id = _customer_id(request.form.get("user_id"))
    customers.set_blocked({"user_ids": [user_id]}, blocked)
    flash("Blocked: its calls are refused." if blocked else "Unblocked: its calls are served again.")
    return redirect(url_for("ui.customer_page", id=user_id))


@blueprint.post("/customer/budget")
def edit_budget():
    """The budget form, read as `/customer/update` reads a body; an empty field is left unchanged."""
    user_id = _customer_id(request.form.get("user_id"))
    body = {"user_id": user_id}
    max_budget = request.form.get("max_budget", "").strip()
    duration = request.form.get("budget_duration", "").strip()
    if max_budget:
        body["max_budget"] = _form_number(max_budget)
    if duration:
        body["budget_duration"] = duration
    if len(body) == 1:
        return _render_customer(user_id, "Nothing to change: fill in a max budget or a budget duration.", 400)
    try:
        customers.update_customer(body)
    except ProxyError as refused:
        if refused.status != 400:
            raise
        return _render_customer(user_id, refused.message, 400)
    flash("Budget saved.")
    return redirect(url_for("ui.customer_page", id=user_id))


def _form_number(text: str):
    """A form field as the JSON number a client would send, or the text itself (which the field's
    reader then refuses with its usual message)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float) and not isinstance(value, bool) else text
