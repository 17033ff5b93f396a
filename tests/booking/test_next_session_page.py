"""Booking a course's next session from the patient's private page, through the real HTTP app:
offered only when the course waits for it, free times only inside the gap window (the last
practitioner first), booked as the course's next session with the checks of a staff booking
(audited, confirmation and reminders planned, a held proposal withdrawn), and every accident a
patient can cause (a time taken meanwhile, a double click, two tabs, an edited form, another
patient's course, a forged post) answered with a page, never a 500 and never two sessions."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from html import unescape
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest

from services.booking.domain import limits
from services.booking.web import csrf
from services.booking.web.self_visit import Slot
from services.scheduler import proposals as scheduler_proposals
from services.scheduler.proposals import propose_next_sessions, release_unanswered
from shared.config import Settings
from shared.db.transactions import in_transaction
from shared.links import patient_link_token
from shared.store import proposals as proposal_store
from shared.store import series
from shared.store.consents import CONSENT_KINDS
from tests import factories
from tests.conftest import BookingApi

LONDON = ZoneInfo("Europe/London")
HART, PATEL = 1, 2  # demo practitioners: Hart works Monday-Friday, Patel Tuesday-Saturday
# The clock stands at Monday 2 March 2026, 09:00 UTC. Session 1 was on Friday 27 February: the
# window for session 2 (6 to 10 days after it) is Thursday 5 to Monday 9 March.
LAST = date(2026, 2, 27)
SLOT_RE = re.compile(r'name="slot" value="([^"]+)"')


def london(day: date, hour: int = 10, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=LONDON).astimezone(UTC)


@dataclass
class Course:
    api: BookingApi
    http: aiohttp.ClientSession
    patient_id: int
    series_id: int
    treatment_id: int
    first_session: int
    home: str

    @property
    def pool(self) -> asyncpg.Pool:
        return self.api.pool

    @property
    def picker(self) -> str:
        return f"{self.home}/courses/{self.series_id}/next"

    async def get(self, path: str, **params: str) -> tuple[int, str]:
        async with self.http.get(self.api.base + path, params=params) as reply:
            return reply.status, await reply.text()

    async def post(
        self, slot: str, *, token: str | None = None, path: str | None = None
    ) -> tuple[int, str, str]:
        """POST a choice with a CSRF token from a fresh page; (status, Location, body)."""
        if token is None:
            _, page = await self.get(self.picker)
            token = csrf_token(page)
        async with self.http.post(
            self.api.base + (path or self.picker),
            data={csrf.FIELD: token, "slot": slot, "who": "same"},
            allow_redirects=False,
        ) as reply:
            return reply.status, reply.headers.get("Location", ""), await reply.text()

    async def sessions(self) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT id, status, position, lower(during) AS starts_at, practitioner_id, source, "
            "needs_review, review_reasons FROM appointment WHERE series_id = $1 ORDER BY id",
            self.series_id,
        )

    async def active(self) -> list[asyncpg.Record]:
        return [r for r in await self.sessions() if r["status"] in ("booked", "confirmed")]


def csrf_token(page: str) -> str:
    found = re.search(rf'name="{csrf.FIELD}" value="([^"]*)"', page)
    assert found, page
    return unescape(found[1])


def slots(page: str) -> list[Slot]:
    parsed = [Slot.parse(unescape(v)) for v in SLOT_RE.findall(page)]
    assert all(parsed)
    return [s for s in parsed if s is not None]


def slot_at(day: date, hour: int, practitioner_id: int = HART) -> str:
    return Slot(london(day, hour), practitioner_id).value


@pytest.fixture
async def http(booking_api: BookingApi) -> AsyncIterator[aiohttp.ClientSession]:
    # Where the TLS proxy would stand: plain http to the service, Secure cookies still sent.
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[booking_api.base])
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        yield session


async def make_course(
    api: BookingApi, http: aiohttp.ClientSession, settings: Settings, first_name: str = "Ada"
) -> Course:
    """A patient (care SMS and email consent) whose course's session 1 is completed."""
    now = api.clock.now()
    patient_id = await factories.patient(
        api.pool,
        clinic_id=api.clinic_id,
        first_name=first_name,
        last_name="Tester",
        mobile="+447700900123" if first_name == "Ada" else "+447700900456",
        email=f"{first_name.lower()}@example.com",
        date_of_birth=None,
        now=now,
    )
    await factories.consent(
        api.pool,
        patient_id,
        {kind: kind in ("care_sms", "care_email") for kind in CONSENT_KINDS},
        now=now,
    )
    treatment_id = await api.pool.fetchval(
        "SELECT id FROM treatment WHERE code = 'hair-mesotherapy'"
    )
    series_id = await series.insert(
        api.pool,
        clinic_id=api.clinic_id,
        patient_id=patient_id,
        treatment_id=treatment_id,
        planned_sessions=8,
        now=now,
    )
    first = await factories.appointment(
        api.pool,
        clinic_id=api.clinic_id,
        practitioner_id=HART,
        treatment_id=treatment_id,
        patient_id=patient_id,
        starts_at=london(LAST),
        now=now - timedelta(days=10),
        status="completed",
        series_id=series_id,
        position=1,
    )
    assert settings.secret_key
    token = patient_link_token(settings.secret_key, patient_id, 1, now=now)
    return Course(api, http, patient_id, series_id, treatment_id, first, f"/s/{token}")


@pytest.fixture
async def ada(booking_api: BookingApi, http: aiohttp.ClientSession, settings: Settings) -> Course:
    return await make_course(booking_api, http, settings)


# -- offered only when the course waits for it ------------------------------------------------


async def test_the_overview_offers_the_next_session_of_a_course_that_waits_for_it(
    ada: Course,
) -> None:
    status, page = await ada.get(ada.home)
    assert status == 200
    assert "Book your next session" in page
    assert "Session 2 of 8 is not booked yet" in page
    assert "between Thursday 5 March 2026 and Monday 9 March 2026" in page
    assert f'href="{ada.picker}"' in page
    # The first free times, the last practitioner's, bookable from the overview itself.
    assert slots(page) == [
        Slot(london(date(2026, 3, 5), 9, minute), HART) for minute in (0, 15, 30, 45)
    ]


async def test_the_picker_offers_only_times_inside_the_gap_window_with_the_same_practitioner(
    ada: Course,
) -> None:
    status, page = await ada.get(ada.picker)
    assert status == 200
    offered = slots(page)
    assert offered, page
    assert {s.practitioner_id for s in offered} == {HART}  # the last session's practitioner
    # The days listed: Hart's working days from the hard minimum to the soft maximum.
    days = set(re.findall(r"day=(2026-\d\d-\d\d)", page)) | {
        s.start.astimezone(LONDON).date().isoformat() for s in offered
    }
    assert days == {"2026-03-05", "2026-03-06", "2026-03-09"}, days
    assert "between <strong>Thursday 5 March 2026</strong> and <strong>Monday 9 March" in page
    assert "clinic will check it" not in page  # the demo window stays under twice the target
    # With anyone: Patel's Saturday too.
    _, anyone = await ada.get(ada.picker, who="any", day="2026-03-07")
    assert {s.practitioner_id for s in slots(anyone)} == {PATEL}
    reads = await ada.pool.fetch(
        "SELECT details FROM audit_log WHERE action = 'patient.read' AND patient_id = $1",
        ada.patient_id,
    )
    assert any("self_service_next_session" in str(r["details"]) for r in reads)


async def test_a_course_with_its_next_session_booked_offers_nothing(
    ada: Course, booking_api: BookingApi
) -> None:
    await factories.appointment(
        ada.pool,
        clinic_id=booking_api.clinic_id,
        practitioner_id=HART,
        treatment_id=ada.treatment_id,
        patient_id=ada.patient_id,
        starts_at=london(date(2026, 3, 6)),
        now=booking_api.clock.now(),
        series_id=ada.series_id,
        position=2,
    )
    _, page = await ada.get(ada.home)
    assert "Book your next session" not in page
    # A page opened before that booking: its post books nothing more.
    status, location, _ = await ada.post(slot_at(date(2026, 3, 9), 10), token=csrf_token(page))
    assert status == 303 and "note=next-not-open" in location
    assert len(await ada.active()) == 1


async def test_a_finished_course_offers_nothing(ada: Course) -> None:
    await ada.pool.execute("UPDATE series SET planned_sessions = 1 WHERE id = $1", ada.series_id)
    _, page = await ada.get(ada.home)
    assert "Book your next session" not in page
    status, page = await ada.get(ada.picker)
    assert status == 200 and "can no longer be booked online" in page  # after the 303


async def test_the_window_over_says_to_call_the_clinic(
    ada: Course, booking_api: BookingApi
) -> None:
    booking_api.clock.advance(timedelta(days=9))  # Wednesday 11 March: past the soft maximum
    _, page = await ada.get(ada.home)
    assert "the usual time for it (6 to 10 days after your last session) has passed" in page
    assert 'href="tel:+442079460000"' in page
    _, picker = await ada.get(ada.picker)
    assert "Please call the clinic" in picker and not slots(picker)


# -- booking it -------------------------------------------------------------------------------


async def test_choosing_a_time_books_the_course_s_next_session(ada: Course) -> None:
    wanted = slot_at(date(2026, 3, 6), 10)
    _, overview = await ada.get(ada.home)  # the overview's form posts to the same place
    assert f'action="{ada.picker}"' in overview
    status, location, _ = await ada.post(wanted, token=csrf_token(overview))
    assert status == 303
    [booked] = await ada.active()
    assert location == f"{ada.home}?done=next-booked&at=s{booked['id']}#s{booked['id']}"
    assert (booked["position"], booked["practitioner_id"]) == (2, HART)
    assert booked["starts_at"] == london(date(2026, 3, 6), 10)
    assert (booked["status"], booked["source"], booked["needs_review"]) == (
        "booked",
        "self_service",
        False,
    )
    [audited] = await ada.pool.fetch(
        "SELECT actor_kind, actor_id, entity, entity_id, details FROM audit_log "
        "WHERE action = 'booking.create' AND patient_id = $1",
        ada.patient_id,
    )
    assert (audited["actor_kind"], audited["actor_id"]) == ("patient", ada.patient_id)
    assert (audited["entity"], audited["entity_id"]) == ("series", ada.series_id)
    kinds = {
        r["kind"]
        for r in await ada.pool.fetch(
            "SELECT kind FROM notification WHERE appointment_id = $1", booked["id"]
        )
    }
    assert "booking_confirmation" in kinds and "reminder_24h" in kinds, kinds
    _, page = await ada.get(location.split("#")[0])
    assert "Done: your next session is booked." in page
    assert "Book your next session" not in page
    assert "Friday 6 March 2026" in page


async def test_a_time_taken_meanwhile_keeps_the_choice_and_offers_others(
    ada: Course, booking_api: BookingApi
) -> None:
    _, page = await ada.get(ada.picker, day="2026-03-06")
    token = csrf_token(page)
    wanted = slot_at(date(2026, 3, 6), 10)
    assert wanted in [s.value for s in slots(page)]
    bob = await factories.patient(
        ada.pool,
        clinic_id=booking_api.clinic_id,
        first_name="Bob",
        last_name="Other",
        mobile=None,
        email="bob@example.com",
        date_of_birth=None,
        now=booking_api.clock.now(),
    )
    consultation = await ada.pool.fetchval("SELECT id FROM treatment WHERE code = 'consultation'")
    await factories.appointment(
        ada.pool,
        clinic_id=booking_api.clinic_id,
        practitioner_id=HART,
        treatment_id=consultation,
        patient_id=bob,
        starts_at=london(date(2026, 3, 6), 10),
        now=booking_api.clock.now(),
    )
    status, _, body = await ada.post(wanted, token=token)
    assert status == 409
    assert "that time has just been taken by someone else" in body
    offered = slots(body)
    assert offered and wanted not in [s.value for s in offered]
    assert all(
        date(2026, 3, 5) <= s.start.astimezone(LONDON).date() <= date(2026, 3, 9) for s in offered
    )
    assert await ada.active() == []


async def test_a_double_click_books_one_session(ada: Course) -> None:
    _, page = await ada.get(ada.picker)
    token = csrf_token(page)
    first, second = await asyncio.gather(
        ada.post(slot_at(date(2026, 3, 6), 10), token=token),
        ada.post(slot_at(date(2026, 3, 9), 11), token=token),
    )
    assert sorted([first[0], second[0]]) == [303, 303]
    [booked] = await ada.active()
    # Whichever time won, the other is no longer bookable online; the winner posted again is
    # answered as it was the first time (tests/browser/test_double_submit_http.py).
    won_first = booked["starts_at"] == london(date(2026, 3, 6), 10)
    other = slot_at(date(2026, 3, 9), 11) if won_first else slot_at(date(2026, 3, 6), 10)
    again = await ada.post(other, token=token)
    assert again[0] == 303 and "note=next-not-open" in again[1]
    assert len(await ada.active()) == 1


@pytest.mark.parametrize(
    ("day", "why"),
    [(date(2026, 3, 4), "below the hard minimum"), (date(2026, 3, 10), "past the soft maximum")],
)
async def test_an_edited_form_cannot_book_outside_the_window(
    ada: Course, day: date, why: str
) -> None:
    status, _, body = await ada.post(slot_at(day, 10))
    assert status == 409, why
    assert "outside the days your next session can be booked online" in body
    assert await ada.active() == []


async def test_garbage_in_the_form_is_a_friendly_page(ada: Course) -> None:
    for slot in ["", "not-a-time", "2026-03-06T10:00:00+00:00|99999", "9999-01-01T00:00Z|1"]:
        status, _, body = await ada.post(slot)
        assert status in (409, 422), (slot, status)
        assert "Book your next session" in body
    assert await ada.active() == []


async def test_a_post_without_the_csrf_token_books_nothing(ada: Course) -> None:
    status, _, body = await ada.post(slot_at(date(2026, 3, 6), 10), token="forged")
    assert status == 403
    assert await ada.active() == []


async def test_another_patient_s_course_is_out_of_reach(
    ada: Course, booking_api: BookingApi, http: aiohttp.ClientSession, settings: Settings
) -> None:
    bob = await make_course(booking_api, http, settings, first_name="Bob")
    status, page = await ada.get(f"{ada.home}/courses/{bob.series_id}/next")
    assert status == 404 and "Bob" not in page
    _, own = await ada.get(ada.picker)
    status, _, _ = await ada.post(
        slot_at(date(2026, 3, 6), 10),
        token=csrf_token(own),
        path=f"{ada.home}/courses/{bob.series_id}/next",
    )
    assert status == 404
    assert await bob.active() == []
    status, _ = await ada.get(f"{ada.home}/courses/not-a-number/next")
    assert status == 404


async def test_a_proposal_held_meanwhile_gives_way_to_the_patient_s_choice(
    ada: Course, booking_api: BookingApi
) -> None:
    _, page = await ada.get(ada.picker)
    token = csrf_token(page)
    # The scheduler proposes (and holds) the very time the patient is about to choose.
    assert await propose_next_sessions(ada.pool, booking_api.clock, hold=timedelta(hours=48)) == 1
    [held] = [r for r in await ada.sessions() if r["status"] == "held"]
    _, overview = await ada.get(ada.home)
    assert "Book your next session" not in overview  # the patient has been asked by SMS
    chosen = Slot(held["starts_at"], held["practitioner_id"]).value
    status, location, _ = await ada.post(chosen, token=token)
    assert status == 303 and "done=next-booked" in location
    rows = {r["id"]: r for r in await ada.sessions()}
    assert rows[held["id"]]["status"] == "cancelled"
    [booked] = await ada.active()
    assert booked["starts_at"] == held["starts_at"] and booked["position"] == 2
    proposal = await ada.pool.fetchval(
        "SELECT status FROM session_proposal WHERE series_id = $1", ada.series_id
    )
    assert proposal == "released"


async def test_a_gap_past_twice_the_target_is_booked_for_clinician_review(
    ada: Course, booking_api: BookingApi
) -> None:
    # A clinic whose soft maximum (18 days) is past twice the target (7).
    await ada.pool.execute(
        "UPDATE treatment_gap SET max_days = 18 WHERE treatment_id = $1 AND position = 2",
        ada.treatment_id,
    )
    _, page = await ada.get(ada.picker, **{"from": "2026-03-12"})
    assert "A session on Saturday 14 March 2026 or later is more than twice" in page
    assert "the clinic will check it before your visit" in page
    status, location, _ = await ada.post(slot_at(date(2026, 3, 16), 10))
    assert status == 303 and "done=next-booked-review" in location
    [booked] = await ada.active()
    assert booked["needs_review"] is True
    assert "more than twice the target of 7: clinician review" in booked["review_reasons"][0]
    _, overview = await ada.get(location.split("#")[0])
    assert "the clinic will check it before your visit" in overview


async def test_booking_over_and_over_hits_the_write_limit_and_books_nothing_more(
    ada: Course, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits.LIMITS, "writes", 2)
    _, page = await ada.get(ada.picker)
    token = csrf_token(page)
    outside = slot_at(date(2026, 3, 20), 10)  # refused for the gap: a write all the same
    assert (await ada.post(outside, token=token))[0] == 409
    assert (await ada.post(outside, token=token))[0] == 409
    status, _, body = await ada.post(slot_at(date(2026, 3, 6), 10), token=token)
    assert status == 429 and "Too many attempts" in body
    assert await ada.active() == []


async def test_a_proposal_the_scheduler_was_about_to_make_is_not_made_once_the_patient_booked(
    ada: Course, booking_api: BookingApi
) -> None:
    # The sweep read the course as waiting, then the patient booked before it held a time.
    [candidate] = await proposal_store.candidates(ada.pool, after_id=0, limit=10)
    status, _, _ = await ada.post(slot_at(date(2026, 3, 9), 11))
    assert status == 303

    async def propose(conn: asyncpg.Connection) -> bool:
        return await scheduler_proposals._propose(
            conn, candidate, hold=timedelta(hours=48), now=booking_api.clock.now()
        )

    assert await in_transaction(ada.pool, propose) is False
    assert [r["status"] for r in await ada.sessions()] == ["completed", "booked"]
    note = await ada.pool.fetchval(
        "SELECT note FROM session_proposal WHERE series_id = $1", ada.series_id
    )
    assert note == "the next session was booked meanwhile"


async def test_after_an_unanswered_proposal_the_patient_books_and_the_desk_need_not_call(
    ada: Course, booking_api: BookingApi
) -> None:
    assert await propose_next_sessions(ada.pool, booking_api.clock, hold=timedelta(hours=48)) == 1
    booking_api.clock.advance(timedelta(hours=47))
    assert await release_unanswered(ada.pool, booking_api.clock) == 1
    [task] = await ada.pool.fetch("SELECT reason, done_at FROM call_task")
    assert (task["reason"], task["done_at"]) == ("proposal_unanswered", None)
    # The released message's link opens the page that now offers the next session.
    _, page = await ada.get(ada.home)
    assert "Book your next session" in page
    status, location, _ = await ada.post(slot_at(date(2026, 3, 9), 11))
    assert status == 303 and "done=next-booked" in location
    [task] = await ada.pool.fetch("SELECT done_by, outcome FROM call_task")
    assert task["done_by"] == "regimen"
    assert task["outcome"] == "closed by Regimen: the patient booked session 2 online"
