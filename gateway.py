"""The per-app state every route works with, kept in `app.extensions["tollgate"]`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import current_app

from config import Config
from providers.http import Upstreams
from providers.router import Router
from spend.pricing import Pricer
from spend.store import Store
from webhooks.dispatcher import Dispatcher
from webhooks.events import Notify


@dataclass
class Gateway:
    config: Config
    store: Store
    http: Upstreams
    clock: Callable[[], float]
    router: Router
    pricers: dict[str, Pricer]
    started_at: float
    dispatcher: Dispatcher | None = None

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
