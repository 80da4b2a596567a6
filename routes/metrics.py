"""`GET /metrics`: Prometheus's scrape, behind the master key as in LiteLLM (see `metrics.py`).

Any worker answers with the sum over every worker, so a scrape through the load balancer is
right whichever worker it reaches.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

import gateway as gateway_state

blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
@blueprint.get("/metrics/")
def scrape():
    body, content_type = gateway_state.current().metrics.exposition(request.headers.get("Accept"))
    return Response(body, content_type=content_type)
