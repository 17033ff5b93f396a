"""Forms submitted twice, over plain HTTP with a browser's cookie jar, written as the accident:
a double click or Back then submit on "Hold these times" keeps the patient's own hold (not
"someone booked that time a moment ago" caused by it), two identical submits at once make one
hold, another browser is still refused, other times replace the browser's hold; and on the
private self-service page a confirm, cancel, move or next-session booking submitted twice
answers as the first did and does it once."""

from __future__ import annotations

import asyncio
import re
from datetime import date, timedelta
from html import unescape

import aiohttp
import pytest

from shared.config import Settings
from shared.store import patients
from tests.booking.test_next_session_page import Course, make_course, slot_at
from tests.browser.conftest import browser_jar
from tests.browser.test_booking_http import VALID, consultation_id, hidden
from tests.browser.test_self_service import Patient
from tests.browser.test_self_service import ada as ada
from tests.conftest import BookingApi

TAKEN = "someone booked that time a moment ago"


async def _consultation_times(
    api: BookingApi, http: aiohttp.ClientSession
) -> tuple[dict[str, str], str]:
    params = {"treatment": str(await consultation_id(api)), "practitioner": "any", "sessions": "1"}
    async with http.get(api.base + "/book/times", params=params) as reply:
        assert reply.status == 200
        return params, await reply.text()


def _slots(times_page: str) -> list[str]:
    return re.findall(r'name="first" id="[^"]+" value="([^"]+)"', times_page)


async def _post_hold(
    api: BookingApi, http: aiohttp.ClientSession, form: dict[str, str] | list[tuple[str, str]]
) -> tuple[int, str]:
    async with http.post(api.base + "/book/hold", data=form) as reply:
        return reply.status, await reply.text()


async def _course_hold_form(api: BookingApi, http: aiohttp.ClientSession) -> list[tuple[str, str]]:
    """The form of "Hold these times" on the schedule page of a whole mesotherapy course (eight
    sessions), as the browser would post it."""
    treatment = await api.pool.fetchval("SELECT id FROM treatment WHERE code = 'hair-mesotherapy'")
    params = {"treatment": str(treatment), "practitioner": "any", "sessions": "8", "consulted": "1"}
    async with http.get(api.base + "/book/times", params=params) as reply:
        first = _slots(await reply.text())[0]
    async with http.get(api.base + "/book/schedule", params={**params, "first": first}) as reply:
        assert reply.status == 200
        page = await reply.text()
    form = re.search(r'<form method="post" action="/book/hold".*?</form>', page, re.S)
    assert form, page
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(0))
    return [(name, unescape(value)) for name, value in fields]


async def _running_holds(api: BookingApi) -> int:
    return int(
        await api.pool.fetchval(
            "SELECT count(*) FROM booking_hold WHERE released_at IS NULL AND expires_at > $1",
            api.clock.now(),
        )
    )


async def _held(api: BookingApi) -> list[int]:
    rows = await api.pool.fetch("SELECT hold_id FROM appointment WHERE status = 'held'")
    return [r["hold_id"] for r in rows]


# -- "Hold these times" twice ---------------------------------------------------------------------


async def test_holding_the_same_time_again_keeps_the_patients_own_hold(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    """Back from the details form to the picker, the same time submitted again: the patient's
    own hold comes back, with the time left it had, and can be booked."""
    api = booking_api
    params, times = await _consultation_times(api, http)
    form = {**params, "first": _slots(times)[0], "csrf_token": hidden(times, "csrf_token")}
    status, first = await _post_hold(api, http, form)
    assert status == 200 and "Your details" in first
    status, again = await _post_hold(api, http, form)
    assert status == 200, again
    assert TAKEN not in again and "Your details" in again
    assert hidden(again, "hold") == hidden(first, "hold")
    assert await _running_holds(api) == 1 and len(await _held(api)) == 1
    data = {**VALID, "hold": hidden(again, "hold"), "csrf_token": hidden(again, "csrf_token")}
    async with http.post(api.base + "/book/confirm", data=data, allow_redirects=False) as reply:
        assert reply.status == 303
        assert reply.headers["Location"].startswith("/book/booked?link=")


async def test_back_and_a_reload_of_the_picker_still_offers_the_browsers_own_held_time(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    """Back from the details form and the week reloaded: the time this browser holds is still
    offered to it (and holding it again brings back its hold), while another browser does not
    see it; the course schedule reloaded proposes the held sessions again."""
    api = booking_api
    params, times = await _consultation_times(api, http)
    held = _slots(times)[0]
    form = {**params, "first": held, "csrf_token": hidden(times, "csrf_token")}
    status, first = await _post_hold(api, http, form)
    assert status == 200 and "Your details" in first
    _, reloaded = await _consultation_times(api, http)
    assert held in _slots(reloaded)
    status, again = await _post_hold(api, http, form)
    assert status == 200 and hidden(again, "hold") == hidden(first, "hold")
    async with aiohttp.ClientSession(cookie_jar=browser_jar(api)) as other:
        _, theirs = await _consultation_times(api, other)
        assert held not in _slots(theirs)

    course = await _course_hold_form(api, http)
    status, course_page = await _post_hold(api, http, course)
    assert status == 200 and "Your details" in course_page
    sessions = [field for field in course if field[0] != "csrf_token"]
    again_course = await _course_hold_form(api, http)
    assert [field for field in again_course if field[0] != "csrf_token"] == sessions


async def test_two_identical_submits_at_once_make_one_hold(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    """A double click on "Hold these times" for a whole course: both requests reach the service
    at once; both answer the details form of one and the same hold of all eight sessions."""
    api = booking_api
    form = await _course_hold_form(api, http)
    for _ in range(3):  # the race, more than once
        answers = await asyncio.gather(*(_post_hold(api, http, form) for _ in range(2)))
        assert [status for status, _ in answers] == [200, 200], answers
        assert all(TAKEN not in page and "Your details" in page for _, page in answers)
        tokens = {hidden(page, "hold") for _, page in answers}
        assert len(tokens) == 1
    assert await api.pool.fetchval("SELECT count(*) FROM booking_hold") == 1
    held = await _held(api)
    assert len(held) == 8 and len(set(held)) == 1


async def test_another_browser_asking_for_a_held_time_is_still_told_it_is_taken(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    api = booking_api
    params, times = await _consultation_times(api, http)
    slot = _slots(times)[0]
    status, _ = await _post_hold(
        api, http, {**params, "first": slot, "csrf_token": hidden(times, "csrf_token")}
    )
    assert status == 200
    async with aiohttp.ClientSession(cookie_jar=browser_jar(api)) as other:
        _, their_times = await _consultation_times(api, other)
        form = {**params, "first": slot, "csrf_token": hidden(their_times, "csrf_token")}
        status, page = await _post_hold(api, other, form)
    assert status == 409 and TAKEN in page
    assert await _running_holds(api) == 1


async def test_other_times_from_the_same_browser_replace_its_hold(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    """Back to the picker and another time chosen: the new time is held and the first one is
    given back at once (free for others, not counted against the address), not both."""
    api = booking_api
    params, times = await _consultation_times(api, http)
    token = hidden(times, "csrf_token")
    slots = _slots(times)
    _, first = await _post_hold(api, http, {**params, "first": slots[0], "csrf_token": token})
    status, second = await _post_hold(api, http, {**params, "first": slots[3], "csrf_token": token})
    assert status == 200 and hidden(second, "hold") != hidden(first, "hold")
    assert await _running_holds(api) == 1 and len(await _held(api)) == 1
    _, now_free = await _consultation_times(api, http)
    assert slots[0] in _slots(now_free)
    # The first details form, submitted from another tab, says its time is no longer held.
    data = {**VALID, "hold": hidden(first, "hold"), "csrf_token": token}
    async with http.post(api.base + "/book/confirm", data=data) as reply:
        assert reply.status == 409
        assert "no longer held" in await reply.text()


async def test_a_taken_new_time_leaves_the_browsers_first_hold_standing(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    api = booking_api
    params, times = await _consultation_times(api, http)
    slots = _slots(times)
    async with aiohttp.ClientSession(cookie_jar=browser_jar(api)) as other:
        _, their = await _consultation_times(api, other)
        form = {**params, "first": slots[3], "csrf_token": hidden(their, "csrf_token")}
        assert (await _post_hold(api, other, form))[0] == 200
    token = hidden(times, "csrf_token")
    _, first = await _post_hold(api, http, {**params, "first": slots[0], "csrf_token": token})
    status, page = await _post_hold(api, http, {**params, "first": slots[3], "csrf_token": token})
    assert status == 409 and TAKEN in page
    data = {**VALID, "hold": hidden(first, "hold"), "csrf_token": token}
    async with http.post(api.base + "/book/review", data=data) as reply:
        assert reply.status == 200 and "Check your booking" in await reply.text()


# -- the self-service forms twice -----------------------------------------------------------------


async def _overview(ada: Patient, http: aiohttp.ClientSession) -> str:
    async with http.get(ada.link) as reply:
        assert reply.status == 200
        return await reply.text()


async def _post_twice(
    http: aiohttp.ClientSession, url: str, data: dict[str, str], *, at_once: bool
) -> list[str]:
    """The same form posted twice (one after the other, or both at once); each Location."""

    async def post() -> str:
        async with http.post(url, data=data, allow_redirects=False) as reply:
            assert reply.status == 303, await reply.text()
            return reply.headers["Location"]

    if at_once:
        return list(await asyncio.gather(post(), post()))
    return [await post(), await post()]


@pytest.mark.parametrize("at_once", [False, True], ids=["back-then-submit", "double-click"])
async def test_confirm_submitted_twice_says_confirmed_both_times(
    ada: Patient, http: aiohttp.ClientSession, at_once: bool
) -> None:
    page = await _overview(ada, http)
    session = ada.sessions[0]
    version = (await ada.row(session))["version"]
    data = {"csrf_token": hidden(page, "csrf_token"), "version": str(version)}
    url = f"{ada.link}/sessions/{session}/confirm"
    locations = await _post_twice(http, url, data, at_once=at_once)
    assert all("done=confirmed" in where for where in locations), locations
    assert (await ada.row(session))["status"] == "confirmed"
    assert len(await ada.audit("appointment.confirm")) == 1


@pytest.mark.parametrize("at_once", [False, True], ids=["back-then-submit", "double-click"])
async def test_cancel_submitted_twice_says_cancelled_both_times(
    ada: Patient, http: aiohttp.ClientSession, at_once: bool
) -> None:
    page = await _overview(ada, http)
    session = ada.sessions[3]
    version = (await ada.row(session))["version"]
    data = {"csrf_token": hidden(page, "csrf_token"), "version": str(version)}
    url = f"{ada.link}/sessions/{session}/cancel"
    locations = await _post_twice(http, url, data, at_once=at_once)
    assert all("done=cancelled" in where for where in locations), locations
    assert (await ada.row(session))["status"] == "cancelled"
    assert len(await ada.audit("appointment.cancel")) == 1


async def test_a_session_the_clinic_cancelled_is_not_reported_as_the_patients_cancel(
    ada: Patient, http: aiohttp.ClientSession, booking_api: BookingApi
) -> None:
    page = await _overview(ada, http)
    session = ada.sessions[3]
    version = (await ada.row(session))["version"]
    reply = await booking_api.call(
        "POST",
        f"/api/v1/appointments/{session}/cancel",
        role="admin",
        json={"reason": "practitioner ill"},
        headers={"If-Match": f'"{version}"'},
    )
    assert reply.status == 200, reply.body
    data = {"csrf_token": hidden(page, "csrf_token"), "version": str(version)}
    async with http.post(f"{ada.link}/sessions/{session}/cancel", data=data) as answer:
        assert answer.status == 200
        text = await answer.text()
    assert "Your session is cancelled" not in text and "can no longer be done online" in text


@pytest.mark.parametrize("at_once", [False, True], ids=["back-then-submit", "double-click"])
async def test_a_move_submitted_twice_says_moved_and_moves_once(
    ada: Patient, http: aiohttp.ClientSession, at_once: bool
) -> None:
    """Session 2 to Tuesday 17 March at 11:00, the form sent twice: not "this session changed
    a moment ago" about the patient's own move."""
    from tests.browser.test_self_service import london

    page = await _overview(ada, http)
    session = ada.sessions[1]
    version = (await ada.row(session))["version"]
    slot = f"{london(date(2026, 3, 17), 11).isoformat()}|1"
    data = {"csrf_token": hidden(page, "csrf_token"), "version": str(version), "slot": slot}
    locations = await _post_twice(
        http, f"{ada.link}/sessions/{session}/move", data, at_once=at_once
    )
    assert all("done=moved" in where for where in locations), locations
    assert (await ada.row(session))["starts_at"] == london(date(2026, 3, 17), 11)
    assert len(await ada.audit("appointment.reschedule")) == 1


async def test_a_move_with_an_offer_submitted_twice_shows_the_offer_again(
    ada: Patient, http: aiohttp.ClientSession
) -> None:
    """Session 1 moved earlier leaves session 2 past the soft maximum: the answer offers to
    bring the later sessions forward. The second submit shows the same page, same offer."""
    from tests.browser.test_self_service import london

    page = await _overview(ada, http)
    session = ada.sessions[0]
    version = (await ada.row(session))["version"]
    slot = f"{london(date(2026, 3, 4), 10).isoformat()}|1"
    data = {"csrf_token": hidden(page, "csrf_token"), "version": str(version), "slot": slot}
    answers = []
    for _ in range(2):
        async with http.post(f"{ada.link}/sessions/{session}/move", data=data) as reply:
            assert reply.status == 200
            answers.append(await reply.text())
    for answer in answers:
        text = " ".join(unescape(re.sub(r"<[^>]+>", "", answer)).split())
        assert "session 1 is now on Wednesday 4 March 2026 at 10:00" in text
        assert "is now 12 days after session 1" in text
        assert "Session 2: from Monday 16 March 2026 at 10:00 to" in text
    assert len(await ada.audit("appointment.reschedule")) == 1
    # The offer itself, accepted with a double submit: the later sessions move once.
    offer = re.search(r'<section class="ss-shift-offer".*?</form>', answers[1], re.S)
    assert offer, answers[1]
    action = re.search(r'action="([^"]+)"', offer.group(0))
    assert action
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', offer.group(0)))
    target = ada.api.base + unescape(action.group(1))
    locations = await _post_twice(
        http, target, {k: unescape(v) for k, v in fields.items()}, at_once=False
    )
    assert all("done=moved" in where for where in locations), locations
    starts = [(await ada.row(i))["starts_at"] for i in ada.sessions]
    assert starts == [london(date(2026, 3, d)) for d in (4, 11, 18, 25)]


@pytest.fixture
async def course(
    booking_api: BookingApi, http: aiohttp.ClientSession, settings: Settings
) -> Course:
    return await make_course(booking_api, http, settings)


@pytest.mark.parametrize("at_once", [False, True], ids=["back-then-submit", "double-click"])
async def test_the_next_session_booked_twice_says_booked_and_books_one(
    course: Course, at_once: bool
) -> None:
    from tests.booking.test_next_session_page import csrf_token

    _, page = await course.get(course.picker)
    token = csrf_token(page)
    wanted = slot_at(date(2026, 3, 6), 10)

    async def post() -> tuple[int, str, str]:
        return await course.post(wanted, token=token)

    answers = (
        list(await asyncio.gather(post(), post())) if at_once else [await post(), await post()]
    )
    [booked] = await course.active()
    for status, location, _ in answers:
        assert status == 303 and f"done=next-booked&at=s{booked['id']}" in location, location


# -- contact details twice: the change replaces the link the form was sent from ------------------


def _contact_form(page: str, mobile: str) -> dict[str, str]:
    form = re.search(r'<form method="post" action="[^"]*/contact#contact".*?</form>', page, re.S)
    assert form, page
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form.group(0)))
    return {**{k: unescape(v) for k, v in fields.items()}, "mobile": mobile}


async def _contact_changes(ada: Patient) -> int:
    return int(
        await ada.pool.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'patient.update' AND patient_id = $1",
            ada.patient_id,
        )
    )


@pytest.mark.parametrize("at_once", [False, True], ids=["back-then-submit", "double-click"])
async def test_a_new_mobile_saved_twice_carries_on_at_the_new_link(
    ada: Patient, http: aiohttp.ClientSession, at_once: bool
) -> None:
    """The new mobile replaces the link the page was opened with; the same form sent again from
    that page is not "this link has been replaced" but saved, at the current link."""
    data = _contact_form(await _overview(ada, http), "07911 123456")
    url = f"{ada.link}/contact"
    locations = await _post_twice(http, url, data, at_once=at_once)
    old_token = ada.link.rsplit("/", 1)[1]
    for where in locations:
        assert "done=contact&" in where and old_token not in where, locations
    patient = await patients.get(ada.pool, ada.patient_id)
    assert patient is not None and patient.mobile == "+447911123456"
    assert await _contact_changes(ada) == 1
    async with http.get(ada.api.base + locations[1]) as reply:
        assert reply.status == 200
        assert "Your contact details are saved" in await reply.text()


async def test_the_replaced_link_still_refuses_another_browser_and_later_posts(
    ada: Patient, http: aiohttp.ClientSession
) -> None:
    data = _contact_form(await _overview(ada, http), "07911 123456")
    async with http.post(f"{ada.link}/contact", data=data, allow_redirects=False) as reply:
        assert reply.status == 303
    # The old link (in an old message) opened in another browser: replaced, nothing shown.
    async with aiohttp.ClientSession(cookie_jar=browser_jar(ada.api)) as other:
        page = await _overview_status(other, ada.link, 410)
        their = _contact_form_token(page)
        async with other.post(
            f"{ada.link}/contact", data={**data, "csrf_token": their}, allow_redirects=False
        ) as reply:
            assert reply.status == 410
            assert "Ada" not in await reply.text()
    # Only the form sent again is carried on: opening the replaced link is refused even in
    # the same browser, and so is the form sent long after.
    async with http.get(ada.link) as reply:
        assert reply.status == 410
    ada.api.clock.advance(timedelta(minutes=11))
    async with http.post(f"{ada.link}/contact", data=data, allow_redirects=False) as reply:
        assert reply.status == 410


async def _overview_status(http: aiohttp.ClientSession, url: str, status: int) -> str:
    async with http.get(url) as reply:
        assert reply.status == status
        return await reply.text()


def _contact_form_token(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]*)"', page)
    assert found, page
    return unescape(found.group(1))
