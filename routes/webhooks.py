"""Webhook operations: a test event, and the outbox's pending and dead events (with re-queue)."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request

import gateway as gateway_state
from errors import BadRequest, error_response
from routes import fields, json_body, page_arg
from spend.outbox import RETRY_WINDOW_SECONDS
from webhooks import events

blueprint = Blueprint("webhooks", __name__)
STATUSES = ("pending", "delivered", "dead")


@blueprint.get("/health/services")
def health_services():
    """`?service=webhook` posts a test event to WEBHOOK_URL now and says whether it was accepted."""
    service = request.args.get("service")
    if service != "webhook":
        raise BadRequest(f"Unsupported service {service!r}: Tollgate checks service=webhook", param="service")
    gw = gateway_state.current()
    if gw.dispatcher is None:
        raise BadRequest("Webhooks are off: set WEBHOOK_URL and general_settings.alerting: [webhook]", param="service")
    event = events.probe_event(gw.clock(), g.get("key_hash"))
    error = gw.dispatcher.send(event.event_id, event.body)
    if error is not None:
        return error_response(502, f"Test webhook was not accepted: {error}", "upstream_error")
    return jsonify(
        {
            "status": "success",
            "message": "Mock Webhook Alert sent, verify Webhook Alert Received",
            "event_id": event.event_id,
        }
    )


@blueprint.get("/webhooks/events")
def list_events():
    """Outbox events, newest first; `?status=pending|delivered|dead`, `?limit=` (≤ 1000)."""
    status = request.args.get("status")
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}", param="status")
    limit = page_arg("limit", 100, 1000)
    rows = gateway_state.current().store.outbox.list(status, limit)
    return jsonify([
        {"event_id": row.event_id, "event": row.event, "customer_id": row.customer_id, "status": row.status,
         "attempts": row.attempts, "last_error": row.last_error, "created_at": events.iso(row.created_at),
         "next_attempt_at": events.iso(row.next_attempt_at) if row.status == "pending" else None}
        for row in rows
    ])  # fmt: skip


@blueprint.post("/webhooks/requeue")
def requeue():
    """`{"event_ids": [...]}` or `{"status": "dead"}`: deliver again, with a fresh 24-hour retry window."""
    body = json_body()
    event_ids = body.get("event_ids")
    if event_ids is None and body.get("status") != "dead":
        raise BadRequest('Send {"event_ids": [...]} or {"status": "dead"}', param="event_ids")
    if event_ids is not None and (
        not isinstance(event_ids, list) or not all(fields.is_text(e) for e in event_ids) or not event_ids
    ):
        raise BadRequest("event_ids must be a non-empty list of event ids", param="event_ids")
    gw = gateway_state.current()
    count = gw.store.outbox.requeue(event_ids, gw.clock(), RETRY_WINDOW_SECONDS)
    if gw.dispatcher is not None:
        gw.dispatcher.wake()
    return jsonify({"requeued": count})
