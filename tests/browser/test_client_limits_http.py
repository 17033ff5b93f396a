"""Abuse limits on the patient pages over plain HTTP, written as the attacks: the self-service
pages hammered (or probed for links)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import pytest

from services.booking import ratelimit
from shared.config import Settings
from shared.links import patient_link_token
from shared.store import patients
from tests.conftest import BookingApi


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # unsafe=True: the service listens on 127.0.0.1, and cookies for IP hosts are otherwise dropped.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


# -- /s/ hammered -------------------------------------------------------------------------------


async def test_self_service_pages_hammered_get_the_friendly_429_page(
    booking_api: BookingApi,
    http: aiohttp.ClientSession,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = booking_api
    monkeypatch.setattr(ratelimit.LIMITS, "reads", 3)
    monkeypatch.setattr(ratelimit.LIMITS, "writes", 2)
    patient_id = await patients.create(
        api.pool,
        clinic_id=api.clinic_id,
        first_name="Ada",
        last_name="Tester",
        mobile="+447400123456",
        email=None,
        date_of_birth=None,
        now=api.clock.now(),
    )
    assert settings.secret_key is not None
    link = "/s/" + patient_link_token(settings.secret_key, patient_id, now=api.clock.now())
    # Probing for links counts too: the limit is checked before the link is looked at.
    for n in range(2):
        async with http.get(f"{api.base}/s/guess{n}AAAAAAAAAAAAAAAAAAAA") as reply:
            assert reply.status == 404
    async with http.get(api.base + link) as reply:
        assert reply.status == 200
    async with http.get(api.base + link) as reply:
        assert reply.status == 429
        assert reply.content_type == "text/html"
        assert 0 < int(reply.headers["Retry-After"]) <= 60
        assert reply.headers["Cache-Control"] == "no-store"
        page = await reply.text()
    assert "Too many attempts" in page and "Ada" not in page
    # Writes are counted apart, the same way.
    for expected in (403, 403, 429):  # no CSRF token: refused, until the limit refuses first
        async with http.post(api.base + link + "/consents", data={}) as reply:
            assert reply.status == expected
    # Another client (behind one trusted proxy) is not limited by this one.
    monkeypatch.setattr(ratelimit.LIMITS, "trusted_proxy_hops", 1)
    async with http.get(api.base + link, headers={"X-Forwarded-For": "203.0.113.5"}) as reply:
        assert reply.status == 200
    monkeypatch.setattr(ratelimit.LIMITS, "trusted_proxy_hops", 0)
    # The next minute the patient gets in again.
    api.clock.advance(timedelta(minutes=1))
    async with http.get(api.base + link) as reply:
        assert reply.status == 200
