"""The patient's self-service page behind the private link, driven in Chromium against the booking
service on a real socket: sessions in local time, confirm, reschedule inside and outside the gap
rules, cancel (and the notice policy), contact details, consents, refused links, CSRF, and another
patient's session out of reach.

Set-up writes straight into the database with the store functions (as tests/appointments does);
every change under test goes through the browser, and the database is checked afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from playwright.async_api import Browser, Page, expect

from shared import outbox_plan
from shared.config import Settings
from shared.links import patient_link_token
from shared.store import appointments, patients, series
from shared.store import consents as consent_store
from shared.store.consents import CONSENT_KINDS
from tests import factories
from tests.browser.conftest import DESKTOP, PHONE
from tests.conftest import BookingApi

LONDON = ZoneInfo("Europe/London")
HART, PATEL = 1, 2  # demo practitioners: Hart works Monday-Friday, Patel Tuesday-Saturday
CLINIC_PHONE = "+442079460000"
# The clock stands at Monday 2 March 2026, 09:00 UTC; the course runs weekly on Mondays at 10:00
# London time, across the change to summer time on Sunday 29 March.
COURSE_DAYS = [date(2026, 3, 9), date(2026, 3, 16), date(2026, 3, 23), date(2026, 3, 30)]


def london(day: date, hour: int = 10, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=LONDON).astimezone(UTC)


@dataclass
class Patient:
    """Ada's course, Bob's appointment, and Ada's private link."""

    api: BookingApi
    secret: str
    patient_id: int
    sessions: list[int]
    other_appointment: int
    link: str

    @property
    def pool(self) -> asyncpg.Pool:
        return self.api.pool

    def session(self, page: Page, index: int) -> Any:
        return page.locator(f"#s{self.sessions[index]}")

    async def row(self, appointment_id: int) -> asyncpg.Record:
        return await self.pool.fetchrow(
            "SELECT status, lower(during) AS starts_at, version FROM appointment WHERE id = $1",
            appointment_id,
        )

    async def audit(self, action: str) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT actor_kind, actor_id, actor_name, entity_id, details FROM audit_log "
            "WHERE action = $1 AND patient_id = $2 ORDER BY id",
            action,
            self.patient_id,
        )


async def _insert(
    api: BookingApi,
    code: str,
    patient_id: int,
    start: datetime,
    *,
    practitioner_id: int = HART,
    series_id: int | None = None,
    position: int | None = None,
) -> int:
    treatment_id = await api.pool.fetchval("SELECT id FROM treatment WHERE code = $1", code)
    return await factories.appointment(
        api.pool,
        clinic_id=api.clinic_id,
        practitioner_id=practitioner_id,
        treatment_id=treatment_id,
        patient_id=patient_id,
        starts_at=start,
        now=api.clock.now(),
        series_id=series_id,
        position=position,
    )


async def _patient(api: BookingApi, first_name: str, mobile: str, email: str) -> int:
    return await factories.patient(
        api.pool,
        clinic_id=api.clinic_id,
        first_name=first_name,
        last_name="Tester",
        mobile=mobile,
        email=email,
        date_of_birth=None,
        now=api.clock.now(),
    )


@pytest.fixture
async def ada(booking_api: BookingApi, settings: Settings) -> Patient:
    api, now = booking_api, booking_api.clock.now()
    patient_id = await _patient(api, "Ada", "+447700900123", "ada@example.com")
    await factories.consent(
        api.pool,
        patient_id,
        {kind: kind == "care_sms" for kind in CONSENT_KINDS},
        source="booking_form",
        wording_version="booking-form-2026-03",
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
    sessions = [
        await _insert(
            api,
            "hair-mesotherapy",
            patient_id,
            london(day),
            series_id=series_id,
            position=position,
        )
        for position, day in enumerate(COURSE_DAYS, start=1)
    ]
    bob = await _patient(api, "Bob", "+447700900456", "bob@example.com")
    other = await _insert(
        api, "consultation", bob, london(date(2026, 3, 10), 11), practitioner_id=PATEL
    )
    assert settings.secret_key is not None
    token = patient_link_token(settings.secret_key, patient_id, 1, now=now)
    return Patient(api, settings.secret_key, patient_id, sessions, other, f"{api.base}/s/{token}")


@pytest.fixture
async def phone(browser: Browser) -> AsyncIterator[Page]:
    # JavaScript off: the pages must work without it, so every test here proves that too.
    context = await browser.new_context(viewport=PHONE, java_script_enabled=False)
    page = await context.new_page()
    yield page
    await context.close()


async def _shot(page: Page, folder: Path, name: str) -> None:
    await page.screenshot(path=str(folder / name), full_page=True)


# -- the overview -----------------------------------------------------------------------------


async def test_overview_shows_every_session_in_clinic_time(
    ada: Patient, phone: Page, screenshots: Path
) -> None:
    response = await phone.goto(ada.link)
    assert response is not None and response.status == 200
    assert response.headers["cache-control"] == "no-store"
    await expect(phone.get_by_role("heading", level=1)).to_have_text("Hello Ada")
    await expect(phone.locator("main")).to_contain_text("Times are in UK time (Europe/London)")
    await expect(phone.get_by_role("heading", name="Hair mesotherapy course")).to_be_visible()
    expected = [
        "Monday 9 March 2026 at 10:00",
        "Monday 16 March 2026 at 10:00",
        "Monday 23 March 2026 at 10:00",
        "Monday 30 March 2026 at 10:00",  # summer time: 09:00 UTC
    ]
    for index, when in enumerate(expected):
        card = ada.session(phone, index)
        await expect(card).to_contain_text(when)
        await expect(card).to_contain_text(f"Session {index + 1} of 8")
        await expect(card).to_contain_text("Booked – please confirm")
        await expect(card.get_by_role("button", name="Confirm")).to_be_visible()
        await expect(card.get_by_role("link", name="Change time")).to_be_visible()
        await expect(card.get_by_role("link", name="Cancel")).to_be_visible()
    await expect(phone.locator("#mobile")).to_have_value("+447700900123")
    await expect(phone.get_by_label("Texts: reminders")).to_be_checked()
    await expect(phone.get_by_label("Emails: booking details")).not_to_be_checked()
    assert "Bob" not in await phone.content()
    # Usable at 360 px: nothing wider than the screen.
    assert await phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await _shot(phone, screenshots, "self-01-overview-phone.png")
    await phone.set_viewport_size(DESKTOP)
    await _shot(phone, screenshots, "self-01-overview-desktop.png")
    reads = await ada.audit("patient.read")
    assert reads and reads[0]["actor_kind"] == "patient"


# -- confirm ----------------------------------------------------------------------------------


async def test_confirm_a_session(ada: Patient, phone: Page) -> None:
    await phone.goto(ada.link)
    await ada.session(phone, 0).get_by_role("button", name="Confirm").click()
    await expect(phone.get_by_role("status")).to_contain_text("your session is confirmed")
    card = ada.session(phone, 0)
    await expect(card).to_contain_text("Confirmed")
    await expect(card.get_by_role("button", name="Confirm")).to_have_count(0)
    assert (await ada.row(ada.sessions[0]))["status"] == "confirmed"
    assert (await ada.row(ada.sessions[1]))["status"] == "booked"
    [row] = await ada.audit("appointment.confirm")
    assert (row["actor_kind"], row["actor_id"], row["entity_id"]) == (
        "patient",
        ada.patient_id,
        ada.sessions[0],
    )
    assert row["actor_name"] == "patient self-service"


# -- reschedule -------------------------------------------------------------------------------


async def _pick(page: Page, ada: Patient, index: int, day_link: str, hour: str) -> None:
    await ada.session(page, index).get_by_role("link", name="Change time").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        f"Change the time of session {index + 1}"
    )
    await page.get_by_role("link", name=day_link, exact=True).click()
    await page.get_by_label(hour, exact=True).check()
    await page.get_by_role("button", name="Move my session to this time").click()


async def test_reschedule_within_the_gap_rules(
    ada: Patient, phone: Page, screenshots: Path
) -> None:
    await phone.goto(ada.link)
    await ada.session(phone, 1).get_by_role("link", name="Change time").click()
    await expect(phone.locator("main")).to_contain_text("Times are in UK time (Europe/London)")
    await expect(phone.locator(".ss-course-context")).to_contain_text(
        "should be 6 to 10 days after it"
    )
    await _shot(phone, screenshots, "self-02-change-time-phone.png")
    await phone.go_back()
    await _pick(phone, ada, 1, "Tue 17 Mar", "11:00")
    await expect(phone.get_by_role("status")).to_contain_text("your session has a new time")
    await expect(ada.session(phone, 1)).to_contain_text("Tuesday 17 March 2026 at 11:00")
    row = await ada.row(ada.sessions[1])
    assert row["starts_at"] == london(date(2026, 3, 17), 11)
    assert row["status"] == "booked"
    [audited] = await ada.audit("appointment.reschedule")
    assert audited["actor_kind"] == "patient"


async def test_reschedule_below_the_hard_minimum_is_refused_and_explained(
    ada: Patient, phone: Page, screenshots: Path
) -> None:
    before = await ada.row(ada.sessions[1])
    await phone.goto(ada.link)
    await _pick(phone, ada, 1, "Thu 12 Mar", "10:00")  # 3 days after session 1
    problem = phone.get_by_role("alert")
    await expect(problem).to_contain_text(
        "sessions of this course must be at least 6 days apart; the previous session "
        "(session 1) is on Monday 9 March 2026"
    )
    await expect(problem).to_contain_text("Please choose Sunday 15 March 2026 or later")
    await _shot(phone, screenshots, "self-03-gap-refused-phone.png")
    assert await ada.row(ada.sessions[1]) == before
    assert await ada.audit("appointment.reschedule") == []


async def test_reschedule_that_crowds_later_sessions_offers_to_move_them(
    ada: Patient, phone: Page, screenshots: Path
) -> None:
    await phone.goto(ada.link)
    await _pick(phone, ada, 1, "Thu 19 Mar", "10:00")  # 4 days before session 3
    await expect(phone.get_by_role("alert")).to_contain_text(
        "sessions of this course must be at least 6 days apart, and session 3 is on "
        "Monday 23 March 2026"
    )
    offer = phone.locator(".ss-shift-offer")
    await expect(offer).to_contain_text("Session 3: from Monday 23 March 2026 at 10:00 to")
    await expect(offer).to_contain_text("Thursday 26 March 2026 at 10:00")
    await expect(offer).to_contain_text("Thursday 2 April 2026 at 10:00")
    await _shot(phone, screenshots, "self-04-shift-offer-phone.png")
    assert (await ada.row(ada.sessions[1]))["starts_at"] == london(COURSE_DAYS[1])
    await offer.get_by_role("button", name="Move this session and the later ones").click()
    await expect(phone.get_by_role("status")).to_contain_text("your session has a new time")
    moved = [(await ada.row(i))["starts_at"] for i in ada.sessions]
    assert moved == [
        london(COURSE_DAYS[0]),
        london(date(2026, 3, 19)),
        london(date(2026, 3, 26)),
        london(date(2026, 4, 2)),
    ]
    await expect(ada.session(phone, 3)).to_contain_text("Thursday 2 April 2026 at 10:00")


async def test_moving_earlier_offers_to_bring_later_sessions_forward(
    ada: Patient, phone: Page, screenshots: Path
) -> None:
    await phone.goto(ada.link)
    await _pick(phone, ada, 0, "Wed 4 Mar", "10:00")  # session 2 is now 12 days later
    status = phone.get_by_role("status")
    await expect(status).to_contain_text("session 1 is now on Wednesday 4 March 2026 at 10:00")
    await expect(phone.locator(".ss-gap-notes")).to_contain_text(
        "Session 2 on Monday 16 March 2026 is now 12 days after session 1 on Wednesday 4 March "
        "2026. The course works best with no more than 10 days between sessions."
    )
    offer = phone.locator(".ss-shift-offer")
    await expect(offer).to_contain_text("Session 2: from Monday 16 March 2026 at 10:00 to")
    await expect(offer).to_contain_text("Wednesday 11 March 2026 at 10:00")
    await _shot(phone, screenshots, "self-08-moved-with-suggestions-phone.png")
    assert (await ada.row(ada.sessions[0]))["starts_at"] == london(date(2026, 3, 4))
    assert (await ada.row(ada.sessions[1]))["starts_at"] == london(COURSE_DAYS[1])
    await offer.get_by_role("button", name="Move the later sessions too").click()
    await expect(phone.get_by_role("status")).to_contain_text("your session has a new time")
    starts = [(await ada.row(i))["starts_at"] for i in ada.sessions]
    assert starts == [london(date(2026, 3, d)) for d in (4, 11, 18, 25)]


# -- cancel -----------------------------------------------------------------------------------


async def test_cancel_far_ahead_is_allowed(ada: Patient, phone: Page) -> None:
    await phone.goto(ada.link)
    await ada.session(phone, 3).get_by_role("link", name="Cancel").click()
    await expect(phone.get_by_role("heading", level=1)).to_have_text("Cancel session 4")
    await phone.get_by_role("button", name="Yes, cancel this session").click()
    await expect(phone.get_by_role("status")).to_contain_text("Your session is cancelled")
    await expect(ada.session(phone, 3)).to_contain_text("Cancelled")
    assert (await ada.row(ada.sessions[3]))["status"] == "cancelled"
    assert (await ada.row(ada.sessions[2]))["status"] == "booked"
    [audited] = await ada.audit("appointment.cancel")
    assert (audited["actor_kind"], audited["entity_id"]) == ("patient", ada.sessions[3])


async def test_cancel_inside_the_notice_is_refused_with_the_policy(
    ada: Patient, phone: Page, screenshots: Path
) -> None:
    # Today at 15:00: six hours away, inside the clinic's 24 hours' notice.
    soon = await _insert(ada.api, "consultation", ada.patient_id, london(date(2026, 3, 2), 15))
    await phone.goto(ada.link)
    card = phone.locator(f"#s{soon}")
    await expect(card).to_contain_text("Cancellations need 24 hours' notice")
    await expect(card).to_contain_text(CLINIC_PHONE)
    await expect(card.get_by_role("link", name="Cancel")).to_have_count(0)

    # Session 1 could be cancelled when the page was opened, but not by the time of the click.
    await ada.session(phone, 0).get_by_role("link", name="Cancel").click()
    ada.api.clock.set(datetime(2026, 3, 8, 12, 0, tzinfo=UTC))  # 22 hours before it
    await phone.get_by_role("button", name="Yes, cancel this session").click()
    policy = phone.get_by_role("alert")
    await expect(policy).to_contain_text(
        f"cancellations need 24 hours' notice. Please call the clinic on {CLINIC_PHONE}"
    )
    await _shot(phone, screenshots, "self-05-cancel-refused-phone.png")
    assert (await ada.row(ada.sessions[0]))["status"] == "booked"
    assert (await ada.row(soon))["status"] == "booked"
    assert await ada.audit("appointment.cancel") == []


# -- contact details and consents -------------------------------------------------------------


async def test_change_mobile_and_email(ada: Patient, phone: Page, screenshots: Path) -> None:
    await phone.goto(ada.link)
    await phone.get_by_label("Mobile number").fill("12345")
    await phone.get_by_label("Email address").fill("ada@@example")
    await phone.get_by_role("button", name="Save contact details").click()
    await expect(phone.locator("#mobile-error")).to_be_visible()
    await expect(phone.locator("#email-error")).to_be_visible()
    await expect(phone.get_by_label("Mobile number")).to_have_value("12345")
    await expect(phone.get_by_label("Email address")).to_have_value("ada@@example")
    await phone.locator("#contact").scroll_into_view_if_needed()
    await _shot(phone, screenshots, "self-06-contact-errors-phone.png")
    patient = await patients.get(ada.pool, ada.patient_id)
    assert patient is not None and patient.mobile == "+447700900123"

    await phone.get_by_label("Mobile number").fill("07911 123456")
    await phone.get_by_label("Email address").fill("ada.new@example.com")
    await phone.get_by_role("button", name="Save contact details").click()
    await expect(phone.get_by_role("status")).to_contain_text("Your contact details are saved")
    await expect(phone.get_by_label("Mobile number")).to_have_value("+447911123456")
    patient = await patients.get(ada.pool, ada.patient_id)
    assert patient is not None
    assert (patient.mobile, patient.email) == ("+447911123456", "ada.new@example.com")
    [audited] = await ada.audit("patient.update")
    assert audited["actor_kind"] == "patient"
    # The change revoked the link it was made with (it went to the old contacts); the page
    # carried on at a new one.
    assert phone.url.split("?")[0] != ada.link
    old = await phone.request.get(ada.link, max_redirects=0)
    assert old.status == 410 and "replaced" in await old.text()
    # The old number and the old address are told, with no link and no new contact in it.
    told = await ada.pool.fetch(
        "SELECT channel, recipient FROM notification WHERE kind = 'contact_changed'"
    )
    assert sorted((r["channel"], r["recipient"]) for r in told) == [
        ("email", "ada@example.com"),
        ("sms", "+447700900123"),
    ]


async def test_contact_changed_meanwhile_is_reported_and_typing_kept(
    ada: Patient, phone: Page
) -> None:
    await phone.goto(ada.link)
    # The clinic corrects the record while the page is open (not the contact details, which
    # would replace the link itself: see the next test).
    await patients.update(
        ada.pool,
        ada.patient_id,
        expected_version=1,
        changes={"last_name": "Tester-Jones"},
        now=ada.api.clock.now(),
    )
    await phone.get_by_label("Mobile number").fill("07911 123456")
    await phone.get_by_role("button", name="Save contact details").click()
    await expect(phone.get_by_role("alert")).to_contain_text(
        "Your details were changed a moment ago"
    )
    await expect(phone.get_by_label("Mobile number")).to_have_value("07911 123456")
    patient = await patients.get(ada.pool, ada.patient_id)
    assert patient is not None and patient.mobile == "+447700900123"
    await phone.get_by_role("button", name="Save contact details").click()
    await expect(phone.get_by_role("status")).to_contain_text("Your contact details are saved")
    patient = await patients.get(ada.pool, ada.patient_id)
    assert patient is not None
    assert (patient.mobile, patient.last_name) == ("+447911123456", "Tester-Jones")


async def test_a_link_issued_before_a_contact_change_no_longer_works(
    ada: Patient, phone: Page
) -> None:
    await phone.goto(ada.link)
    # The clinic puts in Ada's new mobile (she rang): links sent to the old one stop working.
    await patients.update(
        ada.pool,
        ada.patient_id,
        expected_version=1,
        changes={"mobile": "+447911123456"},
        now=ada.api.clock.now(),
    )
    await phone.get_by_label("Email address").fill("someone@else.example")
    await phone.get_by_role("button", name="Save contact details").click()
    await expect(phone.get_by_role("heading", level=1)).to_have_text("This link has been replaced")
    page = await phone.content()
    assert "Ada" not in page and "+4479" not in page
    patient = await patients.get(ada.pool, ada.patient_id)
    assert patient is not None and patient.email == "ada@example.com"
    for path in ("", f"/sessions/{ada.sessions[0]}/move", f"/sessions/{ada.sessions[0]}/cancel"):
        response = await phone.goto(ada.link + path)
        assert response is not None and response.status == 410


async def test_change_consents(ada: Patient, phone: Page) -> None:
    await phone.goto(ada.link)
    await phone.get_by_label("Texts: reminders").uncheck()
    await phone.get_by_label("Emails: booking details").check()
    await phone.get_by_role("button", name="Save my choices").click()
    await expect(phone.get_by_role("status")).to_contain_text("Your choices about messages")
    await expect(phone.get_by_label("Texts: reminders")).not_to_be_checked()
    await expect(phone.get_by_label("Emails: booking details")).to_be_checked()
    await expect(phone.get_by_label("Texts about news and offers")).not_to_be_checked()
    history = await consent_store.history(ada.pool, ada.patient_id)
    changed = [(c.kind, c.granted) for c in history if c.source == "self_service"]
    assert changed == [("care_sms", False), ("care_email", True)]
    assert {c.wording_version for c in history if c.source == "self_service"} == {
        "self-service-2026-03"
    }
    current = await consent_store.current(ada.pool, ada.patient_id)
    assert not current["care_sms"].granted and current["care_email"].granted
    [audited] = await ada.audit("consent.record")
    assert audited["actor_kind"] == "patient"


async def test_unticking_texts_moves_the_planned_reminders_and_the_page_says_where_they_go(
    ada: Patient, phone: Page
) -> None:
    # Ada's four sessions each have their 72 h and 24 h reminders planned by text.
    now = ada.api.clock.now()
    async with ada.pool.acquire() as conn:
        for session in ada.sessions:
            appointment = await appointments.get(conn, session)
            assert appointment is not None
            await outbox_plan.plan_reminders(conn, appointment, now=now)

    async def planned() -> list[tuple[int, str, str, datetime]]:
        rows = await ada.pool.fetch(
            "SELECT appointment_id, kind, channel, due_at FROM notification"
            " WHERE patient_id = $1 AND status = 'scheduled' ORDER BY appointment_id, due_at",
            ada.patient_id,
        )
        return [tuple(r) for r in rows]

    texted = await planned()
    assert len(texted) == 8 and {r[2] for r in texted} == {"sms"}
    hint = phone.locator("#reminders-by")
    await phone.goto(ada.link)
    await expect(hint).to_have_text("Reminders before your sessions come by text.")

    # Texts off, emails not allowed: the texts are called off and the page says so.
    await phone.get_by_label("Texts: reminders").uncheck()
    await phone.get_by_role("button", name="Save my choices").click()
    await expect(phone.get_by_role("status")).to_contain_text("Your choices about messages")
    await expect(hint).to_have_text("With these choices you get no reminders before your sessions.")
    assert await planned() == []

    # Emails on: the same reminders at the same moments, by email.
    await phone.get_by_label("Emails: booking details").check()
    await phone.get_by_role("button", name="Save my choices").click()
    await expect(hint).to_have_text("Reminders before your sessions come by email.")
    assert await planned() == [(a, kind, "email", due) for a, kind, _, due in texted]


# -- refused links, CSRF, another patient's session -------------------------------------------


async def test_expired_and_tampered_links_are_refused_kindly(
    ada: Patient, phone: Page, screenshots: Path
) -> None:
    clock = ada.api.clock
    token = patient_link_token(
        ada.secret, ada.patient_id, 1, now=clock.now(), lifetime=timedelta(days=1)
    )
    clock.advance(timedelta(days=2))
    response = await phone.goto(f"{ada.api.base}/s/{token}")
    assert response is not None and response.status == 410
    await expect(phone.get_by_role("heading", level=1)).to_have_text("This link has expired")
    await expect(phone.locator("main")).to_contain_text(CLINIC_PHONE)
    await _shot(phone, screenshots, "self-07-link-expired-phone.png")
    assert "Ada" not in await phone.content()
    # The patient asks for a new link: it goes to the contacts on file, never to this page.
    await phone.get_by_role("button", name="Send me a new link").click()
    await expect(phone.get_by_role("heading", level=1)).to_have_text("Check your messages")
    page = await phone.content()
    assert "Ada" not in page and "/s/" not in page and "example.com" not in page
    sent = await ada.pool.fetch(
        "SELECT channel FROM notification WHERE kind = 'new_link' AND patient_id = $1",
        ada.patient_id,
    )
    assert sorted(r["channel"] for r in sent) == ["email", "sms"]
    # Asking again (or someone hammering the button) within the hour sends nothing more.
    await phone.goto(f"{ada.api.base}/s/{token}")
    await phone.get_by_role("button", name="Send me a new link").click()
    await expect(phone.get_by_role("heading", level=1)).to_have_text("Check your messages")
    assert await ada.pool.fetchval("SELECT count(*) FROM notification WHERE kind = 'new_link'") == 2

    good = ada.link.rsplit("/", 1)[1]
    tampered = good[:-2] + ("AA" if good[-2:] != "AA" else "BB")
    for bad in (tampered, "not-a-link", "A" * 32):
        response = await phone.goto(f"{ada.api.base}/s/{bad}")
        assert response is not None and response.status == 404
        await expect(phone.get_by_role("heading", level=1)).to_have_text("This link is not valid")
        page = await phone.content()
        assert "Ada" not in page and "Session" not in page


async def test_a_post_without_the_csrf_token_is_refused(ada: Patient, phone: Page) -> None:
    await phone.goto(ada.link)  # the CSRF cookie is set; the form's token is left out below
    url = f"{ada.link}/sessions/{ada.sessions[0]}/confirm"
    for form in ({"version": "1"}, {"version": "1", "csrf_token": "0" * 64}):
        response = await phone.request.post(url, form=form, max_redirects=0)
        assert response.status == 403
        assert "Nothing has been changed" in await response.text()
    assert (await ada.row(ada.sessions[0]))["status"] == "booked"


async def test_another_patients_session_cannot_be_touched(ada: Patient, phone: Page) -> None:
    await phone.goto(ada.link)
    token = await phone.locator("input[name=csrf_token]").first.get_attribute("value")
    assert token
    other = f"{ada.link}/sessions/{ada.other_appointment}"
    before = await ada.row(ada.other_appointment)
    for action in ("confirm", "cancel", "move"):
        response = await phone.request.post(
            f"{other}/{action}",
            form={"csrf_token": token, "version": str(before["version"]), "slot": ""},
            max_redirects=0,
        )
        assert response.status == 404, action
        text = await response.text()
        assert "We could not find that appointment" in text and "Bob" not in text
    for page in ("move", "cancel"):
        response = await phone.goto(f"{other}/{page}")
        assert response is not None and response.status == 404
    for junk in ("0", "abc", "99999999999999999999999"):
        response = await phone.goto(f"{ada.link}/sessions/{junk}/move")
        assert response is not None and response.status == 404
    assert await ada.row(ada.other_appointment) == before
    assert "Bob" not in await phone.content()


async def test_odd_input_gets_a_page_never_an_error(ada: Patient, phone: Page) -> None:
    """Hand-edited query strings and forms: friendly pages and refusals, nothing changed."""
    before = [await ada.row(i) for i in ada.sessions]
    move = f"{ada.link}/sessions/{ada.sessions[1]}/move"
    for query in ("?from=9999-12-31", "?from=0001-01-01&day=x&who=zzz", "?day=2026-13-40"):
        response = await phone.goto(move + query)
        assert response is not None and response.status == 200, query
    token = await phone.locator("input[name=csrf_token]").first.get_attribute("value")
    assert token
    version = str(before[1]["version"])
    for slot in (
        "",
        "garbage",
        "2026-03-17T11:00:00|1",  # no zone
        "0001-01-01T00:00:00+05:00|1",
        "9999-12-31T12:00:00+00:00|1",  # past the calendar arithmetic's end
        "2026-03-17T11:00:00+00:00|99999999999999999999",
        "2026-03-17T11:00:00+00:00|999",  # nobody works here under that id
        "2026-03-17T11:07:00+00:00|1",  # off the clinic's slot grid
    ):
        response = await phone.request.post(
            move, form={"csrf_token": token, "version": version, "slot": slot}, max_redirects=0
        )
        assert response.status in (409, 422), slot
        assert "Choose a new time" in await response.text()
    response = await phone.request.post(
        f"{ada.link}/contact",
        form={"csrf_token": token, "version": "1", "mobile": "9" * 5000, "email": "@" * 5000},
        max_redirects=0,
    )
    assert response.status == 422
    for path in ("/s/%E2%98%83", "/s/" + "A" * 3000):
        response = await phone.goto(ada.api.base + path)
        assert response is not None and response.status == 404
    assert [await ada.row(i) for i in ada.sessions] == before


async def test_every_page_read_through_the_link_is_audited(ada: Patient, phone: Page) -> None:
    session = f"{ada.link}/sessions/{ada.sessions[1]}"
    for url in (ada.link, f"{session}/move", f"{session}/cancel"):
        response = await phone.goto(url)
        assert response is not None and response.status == 200, url
    reads = await ada.audit("patient.read")
    assert [r["details"]["view"] for r in reads] == [
        "self_service",
        "self_service_move",
        "self_service_cancel",
    ]
    assert {(r["actor_kind"], r["actor_id"]) for r in reads} == {("patient", ada.patient_id)}
