"""The booking service: public pages, the patient API and the admin API."""

from __future__ import annotations

import importlib
import pkgutil
from datetime import timedelta
from pathlib import Path

from aiohttp import web

import services.booking.api as api_package
from services.booking.api import API
from services.booking.api.docs import install_docs
from services.booking.api.idempotency import purge_keys
from services.booking.domain import limits
from services.booking.domain.limits import purge_counters
from services.booking.twilio_forwarding import install_twilio_forwarding
from services.booking.web import install_templates
from services.booking.web.aftercare_page import install_aftercare_page
from services.booking.web.booking_pages import install_booking_pages
from services.booking.web.check_in_answer import install_check_in_answers
from services.booking.web.page_headers import install_page_security_headers
from services.booking.web.self_service import install_self_service
from shared.clock import Clock
from shared.config import ConfigError, Settings
from shared.sweeps import Sweep, install_sweeps
from shared.web import create_base_app

# Housekeeping of tables only the booking service uses; any replica may run it.
BOOKING_SWEEPS = [
    Sweep("purge-rate-limit-counters", timedelta(minutes=5), purge_counters),
    Sweep("purge-idempotency-keys", timedelta(hours=1), purge_keys),
]


def _load_api_modules() -> None:
    # Every module of the api package registers its endpoints on API when imported.
    for module in pkgutil.iter_modules(api_package.__path__):
        importlib.import_module(f"{api_package.__name__}.{module.name}")


def create_app(settings: Settings, clock: Clock, database_url: str) -> web.Application:
    if not settings.secret_key:
        raise ConfigError("REGIMEN_SECRET_KEY: required by the booking service (it signs links)")
    # /metrics is served apart (shared.web.create_metrics_app on REGIMEN_BOOKING_METRICS_PORT):
    # this app's port faces the internet.
    app = create_base_app("booking", settings, clock, database_url, public_metrics=False)
    limits.configure(settings)
    templates = install_templates(app)
    install_page_security_headers(app)
    install_booking_pages(app)
    install_self_service(app)
    install_aftercare_page(app)
    install_check_in_answers(app)
    app.router.add_static("/static", Path(__file__).parent / "static", append_version=True)
    _load_api_modules()
    API.install(app)
    install_docs(app, templates)
    install_twilio_forwarding(app)
    install_sweeps(app, BOOKING_SWEEPS)
    return app
