"""The notifier service: sends SMS and email, and receives Twilio's webhooks."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from services.notifier.webhooks import install_webhooks
from shared.clock import Clock
from shared.config import Settings
from shared.providers.email import EmailClient
from shared.providers.sms import SmsClient
from shared.web import SETTINGS, create_base_app

SMS = web.AppKey("sms_client", SmsClient)
EMAIL = web.AppKey("email_client", EmailClient)


async def _provider_clients(app: web.Application) -> AsyncIterator[None]:
    # The Twilio SDK's async client must be created inside the running loop.
    app[SMS] = SmsClient(app[SETTINGS])
    app[EMAIL] = EmailClient(app[SETTINGS])
    yield
    await app[SMS].close()


def create_app(settings: Settings, clock: Clock, database_url: str) -> web.Application:
    app = create_base_app("notifier", settings, clock, database_url)
    app.cleanup_ctx.append(_provider_clients)
    install_webhooks(app)
    return app
