"""The booking pages at `/`, driven in real Chromium against the booking service on a socket.

The clock is the fixtures' FrozenClock (Monday 2 March 2026, 09:00 UTC = 09:00 in London), so
the first free time of the demo clinic is predictable, and a course booked from it crosses the
change to summer time on 29 March: its local times must not move.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
from playwright.async_api import Browser, BrowserContext, Locator, Page, expect

from services.booking.domain import bookings, holds, intake, offers
from services.booking.domain.sessions import SessionRequest
from services.booking.web.booking_pages import CONSULTATION_CLAIMED
from shared.store import consents as consent_store
from shared.store.audit import Actor
from tests.browser.conftest import DESKTOP, PHONE
from tests.conftest import BookingApi

LONDON = ZoneInfo("Europe/London")
# Mesotherapy: four weekly sessions, then four fortnightly (the gaps before sessions 2..8).
MESO_GAPS = [7, 7, 7, 14, 14, 14, 14]
TIMEOUT_MS = 10_000

PATIENT: dict[str, str] = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "mobile": "07911 123456",
    "email": "ada@example.com",
    "dob_day": "10",
    "dob_month": "12",
    "dob_year": "1985",
    "allergies": "lidocaine",
    "medications": "apixaban 5 mg twice a day",
    "notes": "",
}


@dataclass
class Shots:
    """Screenshots of each step, named book-NN-step-<width>.png."""

    folder: Path
    width: str
    enabled: bool = True

    async def take(self, page: Page, name: str) -> None:
        if self.enabled:
            path = self.folder / f"book-{name}-{self.width}.png"
            await page.screenshot(path=path, full_page=True)


async def new_page(
    browser: Browser, viewport: dict[str, int], *, javascript: bool = True
) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(viewport=viewport, java_script_enabled=javascript)
    context.set_default_timeout(TIMEOUT_MS)
    return context, await context.new_page()


async def choose_course_until_details(
    page: Page, base: str, shots: Shots, *, slot: int = 0
) -> list[str]:
    """Mesotherapy from the first page to the details form, taking the first free time (or the
    `slot`-th of the first day). Returns the schedule's session lines as shown."""
    await page.goto(base + "/")
    await expect(page.locator("h1")).to_have_text("Book a treatment")
    await shots.take(page, "01-treatment")
    await page.get_by_label("Hair mesotherapy course").check()
    await page.get_by_role("button", name="Continue").click()

    await expect(page.locator("h1")).to_contain_text("starts with a consultation")
    await shots.take(page, "02-consultation")
    await page.get_by_role("link", name="I have had a consultation: continue").click()

    await expect(page.locator("h1")).to_have_text("Who would you like to see?")
    await expect(page.get_by_label("Anyone available")).to_be_checked()
    await shots.take(page, "03-practitioner")
    await page.get_by_role("button", name="Continue").click()

    await expect(page.locator("h1")).to_have_text("Choose the time of your first session")
    await expect(page.locator(".zone").first).to_have_text("Times are in UK time (Europe/London).")
    await shots.take(page, "04-times")
    await page.locator("details.day[open] label.slot").nth(slot).click()
    await page.get_by_role("button", name="See all sessions").click()

    await expect(page.locator("h1")).to_have_text("Hair mesotherapy course: every session")
    await shots.take(page, "05-schedule")
    lines = await page.locator("ol.schedule li .session-when").all_inner_texts()
    await page.get_by_role("button", name="Hold these times").click()

    await expect(page.locator("h1")).to_have_text("Your details")
    return lines


async def fill_details(page: Page, values: dict[str, str] | None = None) -> None:
    for name, value in (values or PATIENT).items():
        await page.locator(f"#{name}").fill(value)
    await page.locator("#pregnant-no").check()
    await page.locator("#scalp-no").check()
    await page.locator("#keloid-no").check()
    await page.get_by_label("Text me confirmations, reminders and aftercare check-ins").check()
    await page.get_by_label("Email me reminders and aftercare information").check()


def expected_course(first_local: datetime) -> list[datetime]:
    """Every session at the first one's local wall-clock time, gaps in local calendar days."""
    days = [first_local.date()]
    for gap in MESO_GAPS:
        days.append(days[-1] + timedelta(days=gap))
    return [datetime.combine(d, first_local.timetz().replace(tzinfo=None), LONDON) for d in days]


async def patient_rows(pool: asyncpg.Pool, first_name: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        """
        SELECT a.id, a.status, a.needs_review, a.review_reasons, a.position,
               lower(a.during) AS starts_at
        FROM appointment a JOIN patient p ON p.id = a.patient_id
        WHERE p.first_name = $1 ORDER BY lower(a.during)
        """,
        first_name,
    )


def spoken(local: datetime) -> str:
    """How the pages write a local time: "Monday 2 March 2026, 11:00"."""
    return f"{local:%A} {local.day} {local:%B %Y, %H:%M}"


# -- the whole course, at phone and desktop width --------------------------------------------------


async def book_course(
    browser: Browser, api: BookingApi, shots: Shots, viewport: dict[str, int], who: dict[str, str]
) -> list[str]:
    """The whole course booked from the first page, a screenshot of each step; returns the
    session times the schedule page showed."""
    context, page = await new_page(browser, viewport)
    shown = await choose_course_until_details(page, api.base, shots)
    assert len(shown) == 8

    # The hold shows when it ends (server-rendered) and counts down (JavaScript).
    hold_ends = api.clock.now() + timedelta(minutes=10)
    await expect(page.locator(".hold-timer")).to_contain_text(
        f"until {hold_ends.astimezone(LONDON):%H:%M}"
    )
    await expect(page.locator("[data-countdown]")).to_be_visible()
    assert await page.locator("input[type=checkbox]:checked").count() == 0  # none pre-ticked
    await shots.take(page, "06-details")
    await fill_details(page, who)
    await page.get_by_role("button", name="Continue").click()

    await expect(page.locator("h1")).to_have_text("Check your booking")
    name = f"{who['first_name']} {who['last_name']}"
    await expect(page.locator("dl.summary").first).to_contain_text(name)
    await expect(page.locator("ol.sessions li")).to_have_count(8)
    await shots.take(page, "07-review")
    await page.get_by_role("button", name="Book now").click()

    await expect(page.locator("h1")).to_have_text(f"You are booked, {who['first_name']}")
    assert "link=" in page.url and "hold" not in page.url
    await expect(page.locator("ol.sessions li")).to_have_count(8)
    await expect(page.locator("main")).to_contain_text("1 Demo Street, London W1A 1AA")
    await expect(page.locator("main")).to_contain_text("+442079460000")
    await expect(page.locator(".private-link a")).to_contain_text("https://clinic.example.test/s/")
    await shots.take(page, "08-booked")

    # The calendar file has every session, fetched with the page's own link.
    calendar = page.get_by_role("link", name="Add to your calendar (.ics)")
    ics_href = await calendar.get_attribute("href")
    assert ics_href is not None and ics_href.startswith("/book/calendar.ics?link=")
    ics = await context.request.get(api.base + ics_href)
    assert ics.status == 200
    assert ics.headers["content-type"].startswith("text/calendar")
    assert (await ics.text()).count("BEGIN:VEVENT") == 8
    await context.close()
    return shown


async def test_full_course_booking_from_first_page_to_booked(
    browser: Browser, booking_api: BookingApi, screenshots: Path
) -> None:
    """At phone width, checked in the database; then again at desktop width (another patient,
    the next free time) for the screenshots."""
    api = booking_api
    shown = await book_course(browser, api, Shots(screenshots, "phone"), PHONE, PATIENT)

    rows = await patient_rows(api.pool, "Ada")
    local = [r["starts_at"].astimezone(LONDON) for r in rows]
    assert local == expected_course(local[0])
    assert local[0].date() == date(2026, 3, 2) and local[0].hour == 11  # 09:00 + 2 h notice
    assert {r["status"] for r in rows} == {"booked"}
    assert [r["position"] for r in rows] == list(range(1, 9))
    assert [spoken(t) for t in local] == shown
    # Summer time starts on 29 March: the same local hour is an hour earlier in UTC.
    assert {r["starts_at"].astimezone(UTC).hour for r in rows} == {11, 10}
    # Medicines, allergies and the consultation the patient says they had: flagged, not blocked.
    assert all(r["needs_review"] for r in rows)
    reasons = rows[0]["review_reasons"]
    assert CONSULTATION_CLAIMED in reasons
    assert "medications reported on the booking form" in reasons

    patient = await api.pool.fetchrow("SELECT * FROM patient WHERE first_name = 'Ada'")
    assert patient["last_name"] == "Lovelace"
    assert patient["mobile"] == "+447911123456"
    assert patient["email"] == "ada@example.com"
    assert patient["date_of_birth"] == date(1985, 12, 10)
    assert patient["allergies"] == "lidocaine"
    assert patient["medications"] == "apixaban 5 mg twice a day"
    consents = await consent_store.current(api.pool, patient["id"])
    assert {kind: c.granted for kind, c in consents.items()} == {
        "care_sms": True,
        "care_email": True,
        "marketing_sms": False,
        "marketing_email": False,
    }
    confirmations = await api.pool.fetchval(
        "SELECT count(*) FROM notification WHERE patient_id = $1 AND kind = 'booking_confirmation'",
        patient["id"],
    )
    assert confirmations == 2  # email (with the .ics) and, with consent, SMS

    grace = {**PATIENT, "first_name": "Grace", "mobile": "07912 345678", "email": "g@example.com"}
    await book_course(browser, api, Shots(screenshots, "desktop"), DESKTOP, grace)
    rows = await patient_rows(api.pool, "Grace")
    assert [r["status"] for r in rows] == ["booked"] * 8
    later = [r["starts_at"].astimezone(LONDON) for r in rows]
    assert later == expected_course(later[0]) and later[0] > local[0]  # the next free time


# -- the slot goes while the patient types ---------------------------------------------------------


async def book_for_someone_else(api: BookingApi, held: list[asyncpg.Record]) -> None:
    """Another patient takes exactly the held times, through the booking domain."""
    treatment_id = int(held[0]["treatment_id"])
    offer = await offers.load_offer(api.pool, treatment_id, public=True)
    assert offer is not None
    now = api.clock.now()
    actor = Actor("patient", None, "test")
    requests = [SessionRequest(r["practitioner_id"], r["starts_at"]) for r in held]
    async with api.pool.acquire() as conn, conn.transaction():
        created = await holds.create_hold(
            conn,
            offer,
            requests,
            token_for=lambda hold_id: holds.hold_token("other-secret", hold_id),
            now=now,
            actor=actor,
            request_id=None,
        )
        await bookings.book_hold(
            conn,
            created.token,
            intake.PatientForm(
                first_name="Grace",
                last_name="Hopper",
                mobile="07912 345678",
                email=None,
                date_of_birth=date(1970, 1, 1),
                allergies="",
                medications="",
                screening={},
            ),
            intake.ConsentAnswers(False, False, False, False),
            now=now,
            actor=actor,
            request_id=None,
            # As the form books it: the other patient also said they had the consultation.
            consultation_declared=True,
        )


async def held_sessions(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT practitioner_id, treatment_id, lower(during) AS starts_at FROM appointment "
        "WHERE status = 'held' ORDER BY lower(during)"
    )


async def test_slot_taken_by_someone_else_keeps_typing_and_offers_alternatives(
    browser: Browser, booking_api: BookingApi, screenshots: Path
) -> None:
    api = booking_api
    context, page = await new_page(browser, PHONE)
    # 12:00 today: still beyond the two hours' notice once the clock has moved on.
    await choose_course_until_details(page, api.base, Shots(screenshots, "phone", False), slot=4)
    held = await held_sessions(api.pool)
    assert len(held) == 8
    await fill_details(page, {**PATIENT, "notes": "Nervous of needles"})
    await page.get_by_label("Text me news and offers").check()
    await page.locator("#keloid").check()  # yes: flagged, never blocking
    await page.get_by_role("button", name="Continue").click()
    await expect(page.locator("h1")).to_have_text("Check your booking")

    api.clock.advance(timedelta(minutes=11))  # the hold lapses...
    await book_for_someone_else(api, held)  # ...and someone books the very same times
    await page.get_by_role("button", name="Book now").click()

    await expect(page.locator("h1")).to_have_text("Sorry, your times are no longer free")
    await expect(page.locator(".notice")).to_contain_text("Everything you typed is kept below")
    await screenshot(page, screenshots, "book-taken-phone.png")
    for name, value in {**PATIENT, "notes": "Nervous of needles"}.items():
        await expect(page.locator(f"#{name}")).to_have_value(value)
    await expect(page.locator("#pregnant-no")).to_be_checked()
    await expect(page.locator("#keloid")).to_be_checked()
    await expect(page.locator("#care_sms")).to_be_checked()
    await expect(page.locator("#marketing_sms")).to_be_checked()
    await expect(page.locator("#marketing_email")).not_to_be_checked()
    options = page.locator("input[name=alternative]")
    assert await options.count() >= 3
    lost = held[0]["starts_at"]

    # Submitting without picking a time says so beside the choices, still keeping everything.
    await page.get_by_role("button", name="Continue").click()
    await expect(page.locator("#alternative-error")).to_have_text(
        "Error: Choose one of the times offered"
    )
    await expect(page.locator("#first_name")).to_have_value("Ada")

    await page.locator("label[for=alternative-first]").click()
    await page.get_by_role("button", name="Continue").click()
    await expect(page.locator("h1")).to_have_text("Check your booking")
    await expect(page.locator(".notice")).to_contain_text("These are your new times")
    await page.get_by_role("button", name="Book now").click()
    await expect(page.locator("h1")).to_have_text("You are booked, Ada")
    await context.close()

    ada = await patient_rows(api.pool, "Ada")
    grace = await patient_rows(api.pool, "Grace")
    assert len(ada) == 8 and len(grace) == 8
    assert {r["status"] for r in ada} == {"booked"}
    assert ada[0]["starts_at"] > lost  # the nearest later time, the rest of the course after it
    local = [r["starts_at"].astimezone(LONDON) for r in ada]
    assert local == expected_course(local[0])
    screening = await api.pool.fetchval("SELECT screening FROM patient WHERE first_name = 'Ada'")
    assert screening["keloid_history"] is True and screening["notes"] == "Nervous of needles"
    assert any("keloid_history" in reason for reason in ada[0]["review_reasons"])


async def screenshot(page: Page, folder: Path, name: str) -> None:
    await page.screenshot(path=folder / name, full_page=True)


# -- validation helpers -------------------------------------------------------------------


async def field_error(page: Page, name: str) -> Locator:
    """The error of one field, checked to sit beside it and to be announced with it."""
    error = page.locator(f"#{name}-error")
    await expect(error).to_be_visible()
    wrapper = page.locator(f".field-error:has(#{name}-error)")
    await expect(wrapper).to_have_count(1)
    target = "dob_day" if name == "dob" else name
    assert await wrapper.locator(f"#{target}").count() == 1
    # The input (or the fieldset of a group) is marked invalid and described by the message.
    marked = wrapper.locator(f'[aria-invalid=true][aria-describedby~="{name}-error"]')
    await expect(marked).to_have_count(1)
    return error


# -- keyboard only, and the consultation a course needs ------------------------------------------


async def tab_to(page: Page, selector: str, *, limit: int = 80) -> None:
    """Press Tab until `selector` has the focus: proof it is reachable by keyboard."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await page.evaluate("s => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{selector} never got the keyboard focus")


async def test_keyboard_only_from_course_to_consultation_booking(
    browser: Browser, booking_api: BookingApi
) -> None:
    api = booking_api
    context, page = await new_page(browser, DESKTOP)
    await page.goto(api.base + "/")
    await tab_to(page, "input[name=treatment]")
    # Arrow keys move through the radio group: Consultation is first, the course second.
    await page.keyboard.press("ArrowDown")
    await expect(page.get_by_label("Hair mesotherapy course")).to_be_checked()
    await tab_to(page, "button[type=submit]")
    await page.keyboard.press("Enter")

    # The course needs a consultation: the page offers it, explains, and lets one continue.
    await expect(page.locator("h1")).to_have_text(
        "Hair mesotherapy course starts with a consultation"
    )
    await expect(page.locator("main")).to_contain_text("I have had a consultation: continue")
    await tab_to(page, "button[type=submit]")
    await expect(page.locator(":focus")).to_have_text("Book a consultation")
    await page.keyboard.press("Enter")

    await expect(page.locator("h1")).to_have_text("Who would you like to see?")
    await expect(page.locator(".lead")).to_have_text("Consultation")
    await tab_to(page, "input[name=practitioner]:checked")
    await page.keyboard.press("ArrowDown")  # Dr Amelia Hart
    await tab_to(page, "button[type=submit]")
    await page.keyboard.press("Enter")

    await expect(page.locator("h1")).to_have_text("Choose a time")
    await expect(page.locator(".lead")).to_have_text("Consultation with Dr Amelia Hart")
    await tab_to(page, "input.slot-radio")
    await page.keyboard.press("ArrowRight")  # the second time of the day
    chosen = await page.evaluate("document.activeElement.value")
    await tab_to(page, "button[type=submit]")
    await page.keyboard.press("Enter")

    await expect(page.locator("h1")).to_have_text("Your details")
    for name, value in PATIENT.items():
        await tab_to(page, f"#{name}")
        await page.keyboard.type(value)
        if name == "medications":
            for question in ("pregnant", "scalp", "keloid"):
                await tab_to(page, f"input[name={question}]")
                await page.keyboard.press("ArrowRight")  # moves to and picks "No"
    await tab_to(page, "#care_sms")
    await page.keyboard.press("Space")
    await tab_to(page, "button[type=submit]")
    await page.keyboard.press("Enter")

    await expect(page.locator("h1")).to_have_text("Check your booking")
    await tab_to(page, "button[type=submit]")
    await expect(page.locator(":focus")).to_have_text("Book now")
    await page.keyboard.press("Enter")
    await expect(page.locator("h1")).to_have_text("You are booked, Ada")
    await context.close()

    rows = await api.pool.fetch(
        "SELECT a.practitioner_id, lower(a.during) AS starts_at, a.needs_review, t.code "
        "FROM appointment a JOIN treatment t ON t.id = a.treatment_id "
        "WHERE a.status = 'booked'"
    )
    assert len(rows) == 1 and rows[0]["code"] == "consultation"
    practitioner, seconds = chosen.split("-")
    assert rows[0]["practitioner_id"] == int(practitioner)
    assert rows[0]["starts_at"] == datetime.fromtimestamp(int(seconds), UTC)
    consents = await api.pool.fetch("SELECT kind FROM patient_consent WHERE granted")
    assert [r["kind"] for r in consents] == ["care_sms"]


# -- no JavaScript: week pages, moving the first session, validation, booking ---------------


async def test_without_javascript_errors_show_beside_fields_and_it_still_books(
    browser: Browser, booking_api: BookingApi, screenshots: Path
) -> None:
    api = booking_api
    context, page = await new_page(browser, PHONE, javascript=False)
    await page.goto(api.base + "/")
    await page.get_by_label("PRP for hair").check()
    await page.get_by_role("button", name="Continue").click()
    await page.get_by_role("link", name="I have had a consultation: continue").click()
    await page.get_by_label("Dr Samir Patel").check()
    await page.get_by_role("button", name="Continue").click()

    # Next week, back, and forward again: the pages of the picker are plain links.
    await expect(page.locator(".week-range")).to_have_text("3 March to 9 March 2026")
    await page.get_by_role("link", name="Later week").click()
    await expect(page.locator(".week-range")).to_have_text("10 March to 16 March 2026")
    await page.get_by_role("link", name="Earlier week").click()
    await expect(page.locator(".week-range")).to_have_text("3 March to 9 March 2026")
    await page.get_by_role("link", name="Later week").click()
    # Days are plain <details>: open Thursday and take its first time.
    thursday = page.locator("details.day", has_text="Thursday 12 March 2026")
    await thursday.locator("summary").click()
    await thursday.locator("label.slot").first.click()
    await page.get_by_role("button", name="See all sessions").click()

    await expect(page.locator("h1")).to_have_text("PRP for hair: every session")
    await expect(page.locator("ol.schedule li")).to_have_count(4)
    # Moving the first session: back to the picker with the current one marked.
    await page.get_by_role("link", name="Change the first session").click()
    await expect(page.locator("details.day[open] input:checked")).to_have_count(1)
    thursday = page.locator("details.day", has_text="Thursday 12 March 2026")
    await thursday.locator("label.slot").nth(1).click()
    await page.get_by_role("button", name="See all sessions").click()
    await expect(page.locator("ol.schedule li").first).to_contain_text(
        "Thursday 12 March 2026, 09:15"
    )
    await page.get_by_role("button", name="Hold these times").click()

    await expect(page.locator("h1")).to_have_text("Your details")
    await expect(page.locator(".hold-timer")).to_contain_text("until 09:10")
    await expect(page.locator(".countdown")).to_be_hidden()  # the countdown needs JavaScript

    typed = {
        "first_name": "  ",
        "last_name": "",
        "mobile": "12345",
        "email": "ada@",
        "dob_day": "1",
        "dob_month": "1",
        "dob_year": "2030",
        "allergies": "penicillin <b>bold</b>",
        "medications": "warfarin",
    }
    for name, value in typed.items():
        await page.locator(f"#{name}").fill(value)
    await page.locator("#pregnant-no").check()
    await page.get_by_label("Email me news and offers").check()
    await page.get_by_role("button", name="Continue").click()

    await expect(page.locator(".error-summary")).to_be_visible()
    await screenshot(page, screenshots, "book-errors-phone.png")
    expected = {
        "first_name": "Enter your first name",
        "last_name": "Enter your last name",
        "mobile": "Enter a mobile number, like 07700 900123 or +44 7700 900123",
        "email": "Enter an email address like name@example.com, or leave it empty",
        "dob": "Date of birth must be in the past",
        "scalp": "Answer yes or no",
        "keloid": "Answer yes or no",
    }
    for name, text in expected.items():
        await expect(await field_error(page, name)).to_have_text(f"Error: {text}")
    assert await page.locator(".field-message").count() == len(expected)
    await expect(page.locator(".error-summary li")).to_have_count(len(expected))
    for name, value in typed.items():
        await expect(page.locator(f"#{name}")).to_have_value(value)
    await expect(page.locator("#pregnant-no")).to_be_checked()
    await expect(page.locator("#marketing_email")).to_be_checked()

    # A landline has its own message; what was fixed stays fixed.
    await page.locator("#first_name").fill("Ada <script>x</script>")
    await page.locator("#last_name").fill("O'Brien")
    await page.locator("#mobile").fill("020 7946 0000")
    await page.get_by_role("button", name="Continue").click()
    await expect(await field_error(page, "mobile")).to_contain_text("looks like a landline")
    await expect(page.locator("#first_name")).to_have_value("Ada <script>x</script>")
    assert await page.locator("#first_name-error").count() == 0

    await page.locator("#mobile").fill("+44 7911 123456")
    await page.locator("#email").fill("")
    await page.locator("#dob_year").fill("1990")
    await page.locator("#scalp").check()
    await page.locator("#keloid-no").check()
    await page.get_by_role("button", name="Continue").click()
    await expect(page.locator("h1")).to_have_text("Check your booking")
    # Shown as typed, escaped, never interpreted.
    await expect(page.locator("dl.summary").first).to_contain_text("Ada <script>x</script> O'Brien")
    await expect(page.locator("dl.summary").nth(1)).to_contain_text("penicillin <b>bold</b>")
    assert await page.locator("main script, dl b").count() == 0
    await page.get_by_role("button", name="Book now").click()
    await expect(page.locator("h1")).to_have_text("You are booked, Ada <script>x</script>")
    await expect(page.locator("ol.sessions li")).to_have_count(4)
    await context.close()

    rows = await patient_rows(api.pool, "Ada <script>x</script>")
    local = [r["starts_at"].astimezone(LONDON) for r in rows]
    assert [t.date() for t in local] == [
        date(2026, 3, 12),
        date(2026, 4, 9),
        date(2026, 5, 7),
        date(2026, 6, 4),
    ]
    assert {(t.hour, t.minute) for t in local} == {(9, 15)}
    assert {r["status"] for r in rows} == {"booked"}
    # The positive answer and the medicine flag the sessions; neither stopped the booking.
    reasons = rows[0]["review_reasons"]
    assert any("scalp_infection_or_fever" in reason for reason in reasons)
    assert "medications reported on the booking form" in reasons
