"""Which deployments serve a call, in which order: model groups by public name, `rpm` weights,
region filtering, and a short cooldown for a deployment that keeps failing.

A call tries `candidates()[0]` first and, on a retryable failure, the next one (cycling when the
group is smaller than the retries allow). Failure counts and cooldowns live in each worker
process: a worker that saw a deployment fail three times in a row skips it for five seconds,
unless every deployment of the group is cooling down.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable

from config import Deployment
from errors import BadRequest

ALLOWED_FAILS = 3
COOLDOWN_SECONDS = 5.0


class Router:
    def __init__(
        self,
        deployments: Iterable[Deployment],
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._groups: dict[str, list[Deployment]] = {}
        for deployment in deployments:
            self._groups.setdefault(deployment.model_name, []).append(deployment)
        self._rng = rng or random.Random()
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, int] = {}
        self._cooling_until: dict[str, float] = {}

    def model_names(self) -> list[str]:
        return list(self._groups)

    def group(self, model: object) -> list[Deployment]:
        """The deployments serving `model`; a 400 naming the configured models otherwise."""
        if model is None or model == "":
            raise BadRequest(f"No model given: pass `model` as one of: {', '.join(self._groups)}", param="model")
        members = self._groups.get(model) if isinstance(model, str) else None
        if members is None:
            raise BadRequest(
                f"Invalid model name passed in model={model}. Configured models: {', '.join(self._groups)}. "
                "Call `/v1/models` to view available models.",
                param="model",
            )
        return members

    def candidates(self, model: object, region: str | None = None) -> list[Deployment]:
        """The group's deployments in the order to try them: weighted by `rpm`, cooling ones last."""
        members = self.group(model)
        if region is not None:
            members = [d for d in members if d.region_name == region]
            if not members:
                raise BadRequest(
                    f"No deployment of model '{model}' is in region '{region}', the only region this customer "
                    "may use (allowed_model_region)",
                    param="model",
                )
        now = self._clock()
        ready = [d for d in members if self._cooling_until.get(d.id, 0.0) <= now]
        cooling = [d for d in members if d not in ready]
        return self._weighted_order(ready) + self._weighted_order(cooling)

    def _weighted_order(self, members: list[Deployment]) -> list[Deployment]:
        remaining, order = list(members), []
        while remaining:
            chosen = self._rng.choices(remaining, weights=[d.rpm or 1 for d in remaining])[0]
            order.append(chosen)
            remaining.remove(chosen)
        return order

    def failed(self, deployment: Deployment) -> None:
        with self._lock:
            count = self._failures.get(deployment.id, 0) + 1
            if count >= ALLOWED_FAILS:
                self._cooling_until[deployment.id] = self._clock() + COOLDOWN_SECONDS
                count = 0
            self._failures[deployment.id] = count

    def succeeded(self, deployment: Deployment) -> None:
        if self._failures.get(deployment.id):
            with self._lock:
                self._failures[deployment.id] = 0
