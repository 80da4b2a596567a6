"""Health probes: open to all (no key), for load balancers and orchestrators."""

from __future__ import annotations

from flask import Blueprint, jsonify

import gateway as gateway_state
from errors import error_response

blueprint = Blueprint("health", __name__)


@blueprint.get("/health/liveliness")
@blueprint.get("/health/liveness")
def liveness():
    return jsonify("I'm alive!")


@blueprint.get("/health/readiness")
def readiness():
    if not gateway_state.current().store.engine.ping():
        return error_response(503, "Database unreachable", "service_unavailable")
    return jsonify({"status": "healthy", "db": "connected"})
