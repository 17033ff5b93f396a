"""The patient pages' armour: the self-service pages behind a private link carry the same security
headers as the booking pages (no framing by another site, no sniffing, no Referer), and the CSRF
cookie is Secure whenever patients reach the service over https, even though TLS ends at a proxy
and the service itself sees plain http."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from html import unescape

import aiohttp
import pytest

from services.booking.app import create_app
from services.booking.web import csrf
from shared.clock import FrozenClock
from shared.config import Settings
from shared.links import patient_link_token
from tests import factories
from tests.conftest import BookingApi, serve_app

EXPECTED = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def assert_page_armour(headers: Mapping[str, str]) -> None:
    for name, value in EXPECTED.items():
        assert headers.get(name) == value, (name, dict(headers))
    policy = headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy


@pytest.fixture
async def http(booking_api: BookingApi) -> AsyncIterator[aiohttp.ClientSession]:
    # Where the TLS proxy would stand: plain http to the service, Secure cookies still sent.
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[booking_api.base])
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        yield session


async def ada_link(api: BookingApi, settings: Settings) -> str:
    patient_id = await factories.patient(
        api.pool,
        clinic_id=api.clinic_id,
        first_name="Ada",
        last_name="Lovelace",
        mobile="+447911123456",
        email=None,
        date_of_birth=None,
        now=api.clock.now(),
    )
    assert settings.secret_key
    return f"/s/{patient_link_token(settings.secret_key, patient_id, 1, now=api.clock.now())}"


async def test_the_self_service_pages_cannot_be_framed_or_sniffed(
    booking_api: BookingApi, settings: Settings, http: aiohttp.ClientSession
) -> None:
    # Clickjacking: another site frames the patient's page under a decoy and steers a click onto
    # "Cancel"; frame-ancestors 'none' and X-Frame-Options stop the browser from showing it.
    link = await ada_link(booking_api, settings)
    async with http.get(booking_api.base + link) as reply:
        assert reply.status == 200 and "Ada" in await reply.text()
        assert_page_armour(reply.headers)
        assert reply.headers["Cache-Control"] == "no-store"  # the page's own header is kept
        page = await reply.text()
    token = re.search(rf'name="{csrf.FIELD}" value="([^"]*)"', page)
    assert token
    # The redirect after a change (303 back to the overview) carries them too.
    async with http.post(
        booking_api.base + link + "/consents",
        data={csrf.FIELD: unescape(token[1])},
        allow_redirects=False,
    ) as reply:
        assert reply.status == 303
        assert reply.headers["Location"].startswith(link)
        assert_page_armour(reply.headers)
    # A refused link's page too: it is shown to whoever holds a garbled or forged link.
    async with http.get(booking_api.base + "/s/not-a-link-we-issued") as reply:
        assert reply.status == 404 and reply.content_type == "text/html"
        assert_page_armour(reply.headers)


async def test_the_booking_pages_keep_their_headers(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    async with http.get(booking_api.base + "/") as reply:
        assert reply.status == 200
        assert_page_armour(reply.headers)
    async with http.get(booking_api.base + "/book/hold", allow_redirects=False) as reply:
        assert reply.status == 303  # a POST-only step opened by address: back to the start
        assert_page_armour(reply.headers)
    async with http.get(booking_api.base + "/api/v1/public/clinics/1") as reply:
        assert "Content-Security-Policy" not in reply.headers  # JSON, not a page


async def test_the_csrf_cookie_is_secure_behind_a_tls_proxy(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    # The proxy ends TLS and forwards plain http: request.secure is false here, yet patients
    # reach the site over https (REGIMEN_PUBLIC_URL), so the cookie must never go out in clear.
    async with http.get(booking_api.base + "/") as reply:
        cookie = reply.cookies[csrf.COOKIE]
    assert cookie["secure"] is True
    assert cookie["httponly"] is True and cookie["samesite"] == "Lax"


async def test_the_csrf_cookie_is_not_secure_for_a_plain_http_dev_site(
    settings: Settings, clock: FrozenClock, db_url: str
) -> None:
    # `regimen dev` is http://127.0.0.1:8080: a Secure cookie would never come back over http
    # from some browsers, and every form would fail its CSRF check.
    dev = settings.with_overrides(public_url="http://127.0.0.1:8080")
    runner, base = await serve_app(create_app(dev, clock, db_url))
    try:
        async with aiohttp.ClientSession() as http, http.get(base + "/") as reply:
            cookie = reply.cookies[csrf.COOKIE]
        assert cookie["secure"] == ""
    finally:
        await runner.cleanup()
