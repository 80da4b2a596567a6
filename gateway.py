"""The per-app state every route works with, kept in `app.extensions["tollgate"]`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import current_app

from config import Config
from providers.base import SessionPool
from providers.router import Router
from spend.pricing import Pricer
from spend.store import SpendStore


@dataclass
class Gateway:
    config: Config
    store: SpendStore
    http: SessionPool
    clock: Callable[[], float]
    router: Router
    pricers: dict[str, Pricer]
    started_at: float


def current() -> Gateway:
    """The gateway of the app handling this request."""
    return current_app.extensions["tollgate"]
