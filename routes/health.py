"""Health probes: open to all (no key), for load balancers and orchestrators.

Readiness answers 503 when this instance should get no traffic: the database cannot be written
(unreachable, read-only, full, or its SQLite file deleted or replaced: the engine's `ping` proves a
write is possible),
no deployment is served (every `model_list` entry was skipped), or the instance is draining after
SIGTERM. What is wrong but still lets it serve (a default budget tier that does not exist, whose
customers are refused) is listed under `warnings` with a 200: taking the instance out of rotation
would also take away the admin API that fixes it.
"""

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
    gw = gateway_state.current()
    if gw.lifecycle.draining:
        return error_response(503, "Shutting down: draining the calls in flight after SIGTERM", "service_unavailable")
    if not gw.store.engine.ping():
        # The reason (which may name a path) goes to the log, not to the client.
        message = "Database unavailable: it cannot be reached or written (see the log)"
        return error_response(503, message, "service_unavailable")
    if not gw.config.deployments:
        message = "No model is served: every model_list entry was skipped at start-up (see the start-up warnings)"
        return error_response(503, message, "service_unavailable")
    warnings = [problem for problem in (gw.default_tier_problem(),) if problem]
    return jsonify(
        {"status": "healthy", "db": "connected", "models": len(gw.router.model_names()), "warnings": warnings}
    )
