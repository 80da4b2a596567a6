"""The per-app state every route works with, kept in `app.extensions["tollgate"]`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from flask import current_app

from config import Config, Deployment
from lifecycle import Lifecycle
from metrics import Metrics
from providers import PRICING_IDS
from providers.http import Upstreams
from providers.router import Router
from spend.pricing import Pricer, pricer_for
from spend.store import Store
from webhooks.dispatcher import Dispatcher
from webhooks.events import Notify

log = logging.getLogger("tollgate")
WILDCARD_PRICERS = 4096  # models served through wildcards whose pricing a worker remembers


@dataclass
class Gateway:
    config: Config
    store: Store
    http: Upstreams
    clock: Callable[[], float]
    router: Router
    pricers: dict[str, Pricer]  # the named deployments', resolved at start-up
    started_at: float
    dispatcher: Dispatcher | None = None
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    metrics: Metrics = field(default_factory=Metrics)
    _wildcard_pricer: Callable[[Deployment], Pricer] = field(init=False, repr=False)

    def __post_init__(self):
        self._wildcard_pricer = lru_cache(maxsize=WILDCARD_PRICERS)(_price_wildcard_model)

    def pricer(self, deployment: Deployment) -> Pricer:
        """How a call to `deployment` is priced; a wildcard's models are looked up on first use."""
        known = self.pricers.get(deployment.id)
        return known if known is not None else self._wildcard_pricer(deployment)

    def default_tier_problem(self) -> str | None:
        """Why the default budget tier cannot be applied (it does not exist), or None."""
        tier = self.config.settings.max_end_user_budget_id
        if tier is None or self.store.admin.get_budget(tier) is not None:
            return None
        return (
            f"litellm_settings.max_end_user_budget_id: budget tier '{tier}' does not exist; calls of customers "
            "without a budget of their own are refused until it is created with POST /budget/new"
        )

    def notify(self, token: str | None) -> Notify | None:
        """What a charged call may announce by webhook; None when webhooks are off."""
        if self.dispatcher is None:
            return None
        settings = self.config.settings
        return Notify(
            token=token,
            spend_tracked="spend_tracked" in settings.alert_types,
            budget_alerts="budget_alerts" in settings.alert_types,
            thresholds=settings.budget_alert_thresholds,
        )


def current() -> Gateway:
    """The gateway of the app handling this request."""
    return current_app.extensions["tollgate"]


def _price_wildcard_model(deployment: Deployment) -> Pricer:
    pricer = pricer_for(deployment, PRICING_IDS)
    if not pricer.priced:
        log.warning(
            "pricing: no price for model '%s/%s' served by wildcard deployment %s; its calls are charged nothing",
            deployment.provider,
            deployment.model,
            deployment.id,
        )
    return pricer
