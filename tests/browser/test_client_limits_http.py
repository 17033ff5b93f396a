"""Abuse limits on the patient pages over plain HTTP, written as the attacks: the self-service
pages hammered (or probed for links), a fourth hold from one address on the booking form while a
patient replacing their own hold is not held back, and a far-away mobile typed into the booking
form or the self-service contact form (SMS pumping)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from services.booking.domain import limits
from shared.config import Settings
from shared.links import patient_link_token
from shared.store import patients
from tests import factories
from tests.browser.conftest import browser_jar
from tests.browser.test_booking_http import VALID, consultation_id, hidden
from tests.conftest import BookingApi, Reply

US_MOBILE = "+1 415 555 2671"


async def _set_clinic(api: BookingApi, **changes: Any) -> Reply:
    path = f"/api/v1/clinics/{api.clinic_id}"
    current = await api.call("GET", path, role="admin")
    reply = await api.call(
        "PATCH", path, role="admin", json=changes, headers={"If-Match": current.headers["ETag"]}
    )
    assert reply.status == 200, reply.body
    return reply


async def _times(api: BookingApi, http: aiohttp.ClientSession) -> tuple[dict[str, str], str]:
    treatment = await consultation_id(api)
    params = {"treatment": str(treatment), "practitioner": "any", "sessions": "1"}
    async with http.get(api.base + "/book/times", params=params) as reply:
        assert reply.status == 200
        return params, await reply.text()


def _slots(times_page: str) -> list[str]:
    return re.findall(r'name="first" id="[^"]+" value="([^"]+)"', times_page)


async def _hold_on_form(
    api: BookingApi, http: aiohttp.ClientSession, slot_index: int
) -> aiohttp.ClientResponse:
    params, page = await _times(api, http)
    form = {**params, "first": _slots(page)[slot_index], "csrf_token": hidden(page, "csrf_token")}
    return await http.post(api.base + "/book/hold", data=form)


def _mobile_error(page: str) -> str:
    found = re.search(r'<p class="error field-message" id="mobile-error">(.*?)</p>', page, re.S)
    assert found, "no message beside the mobile field"
    return re.sub(r"<[^>]+>", "", found.group(1))


# -- /s/ hammered -------------------------------------------------------------------------------


async def test_self_service_pages_hammered_get_the_friendly_429_page(
    booking_api: BookingApi,
    http: aiohttp.ClientSession,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = booking_api
    monkeypatch.setattr(limits.LIMITS, "reads", 3)
    monkeypatch.setattr(limits.LIMITS, "writes", 2)
    patient_id = await factories.patient(
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
    link = "/s/" + patient_link_token(settings.secret_key, patient_id, 1, now=api.clock.now())
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
    monkeypatch.setattr(limits.LIMITS, "trusted_proxy_hops", 1)
    async with http.get(api.base + link, headers={"X-Forwarded-For": "203.0.113.5"}) as reply:
        assert reply.status == 200
    monkeypatch.setattr(limits.LIMITS, "trusted_proxy_hops", 0)
    # The next minute the patient gets in again.
    api.clock.advance(timedelta(minutes=1))
    async with http.get(api.base + link) as reply:
        assert reply.status == 200


# -- holds per address on the form --------------------------------------------------------------


async def test_a_fourth_hold_gets_a_page_but_replacing_ones_own_hold_still_works(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    api = booking_api
    # Three holds from this address: two through the API, the patient's own on the form.
    treatment = await consultation_id(api)
    for hour in (14, 15):
        held = await api.call(
            "POST",
            "/api/v1/public/holds",
            json={
                "treatment_id": treatment,
                "sessions": [{"practitioner_id": 2, "start": f"2026-03-04T{hour}:00:00Z"}],
            },
        )
        assert held.status == 201, held.body
    async with await _hold_on_form(api, http, 0) as reply:
        assert reply.status == 200
        details = await reply.text()
    token = hidden(details, "hold")

    # A fourth hold, from another browser at the same address, is refused with a page that
    # says what to do. (The same browser choosing another time replaces its own hold instead:
    # tests/browser/test_double_submit_http.py.)
    async with aiohttp.ClientSession(cookie_jar=browser_jar(api)) as other:
        async with await _hold_on_form(api, other, 3) as reply:
            assert reply.status == 429
            assert reply.content_type == "text/html"
            assert int(reply.headers["Retry-After"]) == 600
            page = await reply.text()
    assert "Too many bookings in progress" in page and "Nothing was booked" in page
    assert await api.pool.fetchval("SELECT count(*) FROM booking_hold") == 3

    # The patient picks another time for their own hold (the form's alternatives): the old hold
    # gives way to the new one, so the cap does not stand in the way.
    _, times = await _times(api, http)
    data = {
        **VALID,
        "hold": token,
        "csrf_token": hidden(details, "csrf_token"),
        "taken": "1",
        "alternative": _slots(times)[5],
    }
    async with http.post(api.base + "/book/review", data=data) as reply:
        assert reply.status == 200, await reply.text()
        review = await reply.text()
    new_token = hidden(review, "hold")
    assert new_token != token
    running = await api.pool.fetchval(
        "SELECT count(*) FROM booking_hold WHERE released_at IS NULL AND expires_at > $1",
        api.clock.now(),
    )
    assert running == 3
    async with http.post(
        api.base + "/book/confirm",
        data={**VALID, "hold": new_token, "csrf_token": hidden(review, "csrf_token")},
        allow_redirects=False,
    ) as reply:
        assert reply.status == 303


# -- SMS countries on the form and on the self-service page -------------------------------------


async def test_a_us_mobile_on_the_booking_form_is_refused_beside_the_field_until_allowed(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    api = booking_api
    await _set_clinic(api, sms_countries=None)  # the default: a GB clinic texts GB
    async with await _hold_on_form(api, http, 0) as reply:
        details = await reply.text()
    data = {
        **VALID,
        "mobile": US_MOBILE,
        "hold": hidden(details, "hold"),
        "csrf_token": hidden(details, "csrf_token"),
    }
    for step in ("/book/review", "/book/confirm"):
        async with http.post(api.base + step, data=data) as reply:
            assert reply.status == 400, step
            page = await reply.text()
        message = _mobile_error(page)
        assert "We can only text mobile numbers from United Kingdom (+44)" in message, step
        assert f'id="mobile" value="{US_MOBILE}"' in page  # what was typed is kept
        assert 'id="first_name" value="Ada"' in page
    assert await api.pool.fetchval("SELECT count(*) FROM patient") == 0

    await _set_clinic(api, sms_countries=["GB", "US"])
    async with http.post(api.base + "/book/review", data=data) as reply:
        assert reply.status == 200
    async with http.post(api.base + "/book/confirm", data=data, allow_redirects=False) as reply:
        assert reply.status == 303
    assert await api.pool.fetchval("SELECT mobile FROM patient") == "+14155552671"


async def test_a_patient_cannot_move_their_texts_to_a_country_the_clinic_does_not_text(
    booking_api: BookingApi, http: aiohttp.ClientSession, settings: Settings
) -> None:
    api = booking_api
    await _set_clinic(api, sms_countries=None)
    patient_id = await factories.patient(
        api.pool,
        clinic_id=api.clinic_id,
        first_name="Ada",
        last_name="Tester",
        mobile="+447400123456",
        email="ada@example.com",
        date_of_birth=None,
        now=api.clock.now(),
    )
    assert settings.secret_key is not None
    link = "/s/" + patient_link_token(settings.secret_key, patient_id, 1, now=api.clock.now())
    async with http.get(api.base + link) as reply:
        page = await reply.text()
    form = {
        "csrf_token": hidden(page, "csrf_token"),
        "version": hidden(page, "version"),
        "seen_mobile": hidden(page, "seen_mobile"),
        "seen_email": hidden(page, "seen_email"),
        "mobile": US_MOBILE,
        "email": "ada@example.com",
    }
    async with http.post(api.base + link + "/contact", data=form) as reply:
        assert reply.status == 422
        page = await reply.text()
    found = re.search(r'<p class="error" id="mobile-error">(.*?)</p>', page, re.S)
    assert found and "United Kingdom (+44)" in found.group(1) and "United States" in found.group(1)
    assert f'value="{US_MOBILE}"' in page
    stored = await patients.get(api.pool, patient_id)
    assert stored is not None and stored.mobile == "+447400123456"
