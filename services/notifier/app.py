"""The notifier service: sends SMS and email from the outbox, and receives Twilio's webhooks."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from services.notifier.dispatch import Dispatcher, install_dispatch
from services.notifier.metrics import METRICS, create_metrics
from services.notifier.sweeps import notifier_sweeps, twilio_lister
from services.notifier.webhooks import install_webhooks
from shared.clock import Clock
from shared.config import Settings
from shared.providers.email import EmailClient
from shared.providers.sms import SmsClient
from shared.sweeps import install_sweeps
from shared.web import CLOCK, DATABASE_URL, POOL, REGISTRY, SETTINGS, create_base_app

SMS = web.AppKey("sms_client", SmsClient)
EMAIL = web.AppKey("email_client", EmailClient)


async def _provider_clients(app: web.Application) -> AsyncIterator[None]:
    # The Twilio SDK's async client must be created inside the running loop.
    app[SMS] = SmsClient(app[SETTINGS])
    app[EMAIL] = EmailClient(app[SETTINGS])
    yield
    await app[SMS].close()
    await app[EMAIL].close()


def _dispatcher(app: web.Application) -> Dispatcher:
    return Dispatcher(
        pool=app[POOL],
        clock=app[CLOCK],
        settings=app[SETTINGS],
        sms=app[SMS],
        email=app[EMAIL],
        metrics=app[METRICS],
        database_url=app[DATABASE_URL],
    )


def create_app(settings: Settings, clock: Clock, database_url: str) -> web.Application:
    app = create_base_app("notifier", settings, clock, database_url)
    app[METRICS] = create_metrics(app[REGISTRY])
    # Order matters: cleanup runs in reverse, so sweeps stop first, then the dispatcher drains,
    # then the provider clients and the pool close.
    app.cleanup_ctx.append(_provider_clients)
    install_dispatch(app, make=_dispatcher)
    install_webhooks(app)
    install_sweeps(
        app,
        notifier_sweeps(
            app,
            list_recent=lambda a: twilio_lister(a[SMS]),
            metrics=lambda a: a[METRICS],
            settings=settings,
        ),
    )
    return app
