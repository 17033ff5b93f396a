"""The booking pages over plain HTTP, where a browser adds nothing: CSRF, the honeypot, rate
limits, friendly HTML error pages (never problem+json or a stack trace), and a course that does
not fit from the chosen start."""

from __future__ import annotations

import re
from datetime import datetime
from html import unescape
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest

from services.booking.domain import limits
from tests.conftest import BookingApi

VALID = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "mobile": "07911 123456",
    "email": "ada@example.com",
    "dob_day": "10",
    "dob_month": "12",
    "dob_year": "1985",
    "allergies": "",
    "medications": "",
    "notes": "",
    "pregnant": "no",
    "scalp": "no",
    "keloid": "no",
    "care_sms": "yes",
}


def hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no field {name}"
    return unescape(found.group(1))


async def consultation_id(api: BookingApi) -> int:
    return int(await api.pool.fetchval("SELECT id FROM treatment WHERE code = 'consultation'"))


async def held_details_page(api: BookingApi, http: aiohttp.ClientSession) -> str:
    """Through the GET pages to a held Consultation: the details form's HTML."""
    treatment = await consultation_id(api)
    params = {"treatment": str(treatment), "practitioner": "any", "sessions": "1"}
    async with http.get(api.base + "/book/times", params=params) as reply:
        assert reply.status == 200
        times = await reply.text()
    slot = re.search(r'name="first" id="[^"]+" value="([^"]+)"', times)
    assert slot
    form = {**params, "first": slot.group(1), "csrf_token": hidden(times, "csrf_token")}
    async with http.post(api.base + "/book/hold", data=form) as reply:
        assert reply.status == 200
        return await reply.text()


async def counts(api: BookingApi) -> dict[str, Any]:
    row = await api.pool.fetchrow(
        "SELECT (SELECT count(*) FROM booking_hold) AS holds, "
        "(SELECT count(*) FROM patient) AS patients, "
        "(SELECT count(*) FROM appointment WHERE status = 'booked') AS booked"
    )
    return dict(row)


async def test_post_without_csrf_token_is_refused_with_a_page(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    api = booking_api
    treatment = await consultation_id(api)
    async with http.get(api.base + "/") as reply:  # the cookie, but no token in the form
        assert reply.status == 200
    start = api.clock.now().replace(hour=14)
    form = {"treatment": str(treatment), "first": f"1-{int(start.timestamp())}"}
    async with http.post(api.base + "/book/hold", data=form) as reply:
        assert reply.status == 403
        assert reply.content_type == "text/html"
        page = await reply.text()
    assert "This form has expired" in page and "nothing was booked" in page
    async with http.post(api.base + "/book/hold", data={**form, "csrf_token": "0" * 64}) as reply:
        assert reply.status == 403
    # A token from another browser (another cookie) does not pass either.
    page = await held_details_page(api, http)
    token = hidden(page, "csrf_token")
    async with aiohttp.ClientSession() as stranger:
        data = {**VALID, "hold": hidden(page, "hold"), "csrf_token": token}
        async with stranger.post(api.base + "/book/confirm", data=data) as reply:
            assert reply.status == 403
    assert await counts(api) == {"holds": 1, "patients": 0, "booked": 0}


async def test_filled_honeypot_gets_a_generic_refusal_and_books_nothing(
    booking_api: BookingApi, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    api = booking_api
    page = await held_details_page(api, http)
    assert 'name="website"' in page and 'tabindex="-1"' in page
    data = {
        **VALID,
        "hold": hidden(page, "hold"),
        "csrf_token": hidden(page, "csrf_token"),
        "website": "https://spam.example",
    }
    for step in ("/book/review", "/book/confirm"):
        async with http.post(api.base + step, data=data) as reply:
            assert reply.status == 400
            text = await reply.text()
        assert "We could not take this booking" in text
        assert "Ada" not in text and "spam.example" not in text
    assert await counts(api) == {"holds": 1, "patients": 0, "booked": 0}
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "Ada" not in logged and "07911" not in logged and "spam.example" not in logged

    # The same form with the honeypot empty books.
    async with http.post(
        api.base + "/book/confirm", data={**data, "website": ""}, allow_redirects=False
    ) as reply:
        assert reply.status == 303
        assert reply.headers["Location"].startswith("/book/booked?link=")
    assert (await counts(api))["booked"] == 1


async def test_page_posts_are_rate_limited_per_address(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    api = booking_api
    page = await held_details_page(api, http)
    data = {**VALID, "hold": hidden(page, "hold"), "csrf_token": hidden(page, "csrf_token")}
    # Use up this minute's allowance of page POSTs from this address.
    for _ in range(limits.LIMITS.writes):
        await limits.hit(
            api.pool,
            "pages-writes:127.0.0.1",
            limit=limits.LIMITS.writes,
            window=limits.WINDOW,
            now=api.clock.now(),
        )
    async with http.post(api.base + "/book/confirm", data=data) as reply:
        assert reply.status == 429
        assert reply.content_type == "text/html"
        assert int(reply.headers["Retry-After"]) > 0
        assert "Too many attempts" in await reply.text()
    assert (await counts(api))["booked"] == 0


BAD_ADDRESSES = [
    ("/book/nothing-here", 404, "Page not found"),
    ("/book/booked?link=not-a-real-link", 404, "This link does not work"),
    ("/book/calendar.ics?link=" + "A" * 32, 404, "This link does not work"),
    ("/book/times?treatment=abc", 400, "We could not use that"),
    ("/book/times?treatment=999999", 404, "Page not found"),
    ("/book/times?treatment=1&practitioner=77", 404, "Page not found"),
    ("/book/times?treatment=1&sessions=5", 400, "We could not use that"),
    ("/book/schedule?treatment=2&consulted=1&first=%3Cscript%3E", 400, "Choose a time"),
]


async def test_bad_addresses_get_friendly_html_pages(
    booking_api: BookingApi, http: aiohttp.ClientSession, db_url: str
) -> None:
    for path, status, text in BAD_ADDRESSES:
        async with http.get(booking_api.base + path) as reply:
            assert (reply.status, reply.content_type) == (status, "text/html"), path
            page = await reply.text()
        assert text in page, path
        assert "Traceback" not in page and "<script>" not in page

    # Our own failure: a friendly page with a reference, never a stack trace.
    owner = await asyncpg.connect(db_url)  # the services' role may not change the schema
    try:
        await owner.execute("ALTER TABLE working_hours RENAME TO working_hours_gone")
    finally:
        await owner.close()
    async with http.get(booking_api.base + "/book/times?treatment=1") as reply:
        assert (reply.status, reply.content_type) == (500, "text/html")
        page = await reply.text()
    assert "Sorry, something went wrong on our side" in page
    assert reply.headers["X-Request-Id"] in page
    assert "Traceback" not in page and "working_hours" not in page


async def test_course_that_does_not_fit_from_its_start_says_so_and_offers_another(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    api = booking_api
    meso = int(await api.pool.fetchval("SELECT id FROM treatment WHERE code = 'hair-mesotherapy'"))
    # Ten days before the booking horizon (180 days) ends: sessions 3 to 8 cannot follow.
    late = datetime(2026, 8, 19, 10, 0, tzinfo=ZoneInfo("Europe/London"))
    params = {
        "treatment": str(meso),
        "practitioner": "any",
        "consulted": "1",
        "first": f"1-{int(late.timestamp())}",
    }
    async with http.get(api.base + "/book/schedule", params=params) as reply:
        assert reply.status == 200
        page = await reply.text()
    assert "We cannot fit the whole course from that start" in page
    assert "Wednesday 19 August 2026, 10:00" in page
    assert "Choose another first session" in page
    assert 'action="/book/hold"' not in page  # nothing to hold


async def test_post_only_steps_opened_by_address_go_back_to_the_start(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    async with http.get(booking_api.base + "/book/confirm", allow_redirects=False) as reply:
        assert reply.status == 303 and reply.headers["Location"] == "/"
    async with http.post(booking_api.base + "/book/nothing", data={}) as reply:
        assert reply.status == 404 and reply.content_type == "text/html"


async def test_change_details_from_review_then_give_the_times_back(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    api = booking_api
    page = await held_details_page(api, http)
    data = {**VALID, "hold": hidden(page, "hold"), "csrf_token": hidden(page, "csrf_token")}
    async with http.post(api.base + "/book/details", data=data) as reply:
        assert reply.status == 200
        form = await reply.text()
    assert 'id="first_name" value="Ada"' in form and 'id="mobile" value="07911 123456"' in form
    assert re.search(r'id="care_sms" value="yes" checked', form)
    assert re.search(r'id="pregnant-no" value="no" checked', form)

    async with http.post(api.base + "/book/release", data=data, allow_redirects=False) as reply:
        assert reply.status == 303 and reply.headers["Location"] == "/"
    statuses = await api.pool.fetch("SELECT status FROM appointment")
    assert [r["status"] for r in statuses] == ["cancelled"]
    # The released hold cannot be booked; the patient is offered times again, typing kept.
    async with http.post(api.base + "/book/confirm", data=data) as reply:
        assert reply.status == 409
        again = await reply.text()
    assert "no longer held" in again and 'id="first_name" value="Ada"' in again
    assert 'name="alternative"' in again


async def test_a_name_with_hidden_characters_is_refused_kindly_keeping_the_typing(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    # Pasted from a chat or a web page, a name can bring a direction override or a zero-width
    # space with it: staff would see a different name (or two "identical" patients).
    api = booking_api
    page = await held_details_page(api, http)
    typed = {"first_name": "Ada\u202e", "last_name": "Love\u200blace"}
    data = {
        **VALID,
        **typed,
        "hold": hidden(page, "hold"),
        "csrf_token": hidden(page, "csrf_token"),
    }
    async with http.post(api.base + "/book/review", data=data) as reply:
        assert reply.status == 400
        form = await reply.text()
    assert "First name contains hidden characters" in form
    assert "Last name contains hidden characters" in form
    assert 'id="mobile" value="07911 123456"' in form  # the rest of the typing is kept
    assert 'id="first_name" value="Ada\u202e"' in form  # and so is the name, to be retyped
    assert await counts(api) == {"holds": 1, "patients": 0, "booked": 0}


async def test_the_form_offers_a_course_s_first_session_alone_and_says_what_follows(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    api = booking_api
    prp = int(await api.pool.fetchval("SELECT id FROM treatment WHERE code = 'prp-hair'"))
    base = {"treatment": str(prp), "consulted": "1"}
    async with http.get(api.base + "/book/practitioner", params=base) as reply:
        assert reply.status == 200
        page = await reply.text()
    assert '<option value="1">Only the first session for now</option>' in page
    assert "we text you a time kept for the next one" in page
    params = {**base, "practitioner": "1", "sessions": "1"}
    async with http.get(api.base + "/book/times", params=params) as reply:
        assert reply.status == 200
        times = await reply.text()
    assert "You are booking the first session only" in times
    slot = re.search(r'name="first" id="[^"]+" value="([^"]+)"', times)
    assert slot
    async with http.get(
        api.base + "/book/schedule", params={**params, "first": slot.group(1)}
    ) as reply:
        assert reply.status == 200
        schedule = await reply.text()
    assert "your first session" in schedule
    assert schedule.count('name="s"') == 1  # one session to hold
    # Two sessions of a four-session course is not on offer.
    async with http.get(api.base + "/book/times", params={**params, "sessions": "2"}) as reply:
        assert reply.status == 400
