"""The scheduler service: everything the clock drives, as periodic sweeps."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from services.scheduler.escalations import install_unrouted_warning
from services.scheduler.sweeps import default_sweeps
from shared.clock import Clock
from shared.config import Settings
from shared.sweeps import Sweep, install_sweeps
from shared.web import create_base_app


def create_app(
    settings: Settings,
    clock: Clock,
    database_url: str,
    sweeps: Sequence[Sweep] | None = None,
) -> web.Application:
    """`sweeps`: the scheduler's own (default_sweeps) unless given."""
    app = create_base_app("scheduler", settings, clock, database_url)
    install_sweeps(app, default_sweeps(settings) if sweeps is None else sweeps)
    install_unrouted_warning(app)
    return app
