"""One log line per admin action (customer and budget new, update, delete, block, unblock): who did
what to which ids, and which fields it set. Never a value that could be a key or a secret: field
names only, not their values."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from flask import request

from routes.fields import BUDGET_FIELDS

log = logging.getLogger("tollgate.admin")
MAX_CHANGED_BY = 128
MASTER_KEY = "master_key"  # who acted when the request does not say: the holder of the master key


def changed_by() -> str:
    """Who made the change: LiteLLM's `LiteLLM-Changed-By` header (the person an admin tool acts
    for) when it is short printable text, else `master_key`."""
    given = (request.headers.get("LiteLLM-Changed-By") or "").strip()
    if given and len(given) <= MAX_CHANGED_BY and given.isprintable():
        return given
    return MASTER_KEY


def admin_action(action: str, ids: Iterable[str], fields: Iterable[str] = ()) -> None:
    """Log `action` (`customer.update`, `budget.delete`, …) on `ids`, with the names of the fields it set."""
    ids, fields, by = list(ids), sorted(fields), changed_by()
    log.info(
        "admin %s ids=%s by=%s fields=%s",
        action,
        json.dumps(ids, ensure_ascii=False),
        json.dumps(by, ensure_ascii=False),
        ",".join(fields) or "-",
        extra={"action": action, "ids": ids, "changed_by": by, "fields": fields},
    )


def field_names(changes: dict | None = None, budget: dict | None = None) -> list[str]:
    """The API names of the fields a customer or budget change sets (`spend`, `max_budget`, …)."""
    columns = {column: name for name, column in BUDGET_FIELDS.items()}
    names = ["spend" if key == "spend_units" else key for key in changes or {}]
    return names + [columns.get(column, column) for column in budget or {}]
