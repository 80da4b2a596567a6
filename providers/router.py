"""Which deployment serves a call: model groups by public name, weighted by `rpm` when given."""

from __future__ import annotations

import random
from collections.abc import Iterable

from config import Deployment
from errors import BadRequest


class Router:
    def __init__(self, deployments: Iterable[Deployment], rng: random.Random | None = None):
        self._groups: dict[str, list[Deployment]] = {}
        for deployment in deployments:
            self._groups.setdefault(deployment.model_name, []).append(deployment)
        self._weights = {
            name: [deployment.rpm or 1 for deployment in members] for name, members in self._groups.items()
        }
        self._rng = rng or random.Random()

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

    def pick(self, model: str, region: str | None = None) -> Deployment:
        """One deployment of the group (in `region` when given), at random in proportion to `rpm`."""
        members = self.group(model)
        weights = self._weights[model]
        if region is not None:
            chosen = [(d, w) for d, w in zip(members, weights, strict=True) if d.region_name == region]
            if not chosen:
                raise BadRequest(
                    f"No deployment of model '{model}' is in region '{region}', the only region this customer "
                    "may use (allowed_model_region)",
                    param="model",
                )
            members, weights = [d for d, _ in chosen], [w for _, w in chosen]
        if len(members) == 1:
            return members[0]
        return self._rng.choices(members, weights=weights)[0]
