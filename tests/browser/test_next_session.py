"""Booking a course's next session from the patient's private page, in headless Chromium with
JavaScript off, against the booking service on a real socket: the overview's "Book your next
session", the picker inside the gap window, the booking, and the course as it stands after.

Set-up writes straight into the database with the store functions; the booking goes through the
browser, and the database is checked afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from shared.config import Settings
from tests.booking.test_next_session_page import HART, LONDON, Course, london, make_course
from tests.browser.conftest import PHONE
from tests.conftest import BookingApi


@pytest.fixture
async def phone(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=PHONE, java_script_enabled=False)
    page = await context.new_page()
    yield page
    await context.close()


@pytest.fixture
async def ada(booking_api: BookingApi, http: object, settings: Settings) -> Course:
    return await make_course(booking_api, http, settings)  # type: ignore[arg-type]


async def test_book_the_next_session_from_the_private_page(
    ada: Course, phone: Page, screenshots: Path
) -> None:
    await phone.goto(ada.api.base + ada.home)
    section = phone.locator(f"#next-{ada.series_id}")
    await expect(section.get_by_role("heading", name="Book your next session")).to_be_visible()
    await expect(section).to_contain_text("Session 2 of 8 is not booked yet")
    await expect(section).to_contain_text("between Thursday 5 March 2026 and Monday 9 March 2026")
    await phone.screenshot(
        path=str(screenshots / "self-next-00-overview-phone.png"), full_page=True
    )
    # The first free times are on the overview itself; the picker has them all.
    await expect(section.get_by_role("radio")).to_have_count(4)
    await expect(section.get_by_label("Thu 5 Mar 09:00 · Dr Amelia Hart")).to_be_visible()
    await section.get_by_role("link", name="More times").click()

    await expect(phone.get_by_role("heading", level=1)).to_have_text("Book your next session")
    await expect(phone.locator(".ss-course-context")).to_contain_text(
        "should be 6 to 10 days after it"
    )
    await expect(phone.locator("main")).to_contain_text("Times are in UK time (Europe/London)")
    # Only the window's days, and the last session's practitioner first.
    days = phone.locator(".ss-days li")
    await expect(days).to_have_text(["Thu 5 Mar", "Fri 6 Mar", "Mon 9 Mar"])
    assert await phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await phone.screenshot(path=str(screenshots / "self-next-01-picker-phone.png"), full_page=True)
    await phone.get_by_role("link", name="Fri 6 Mar", exact=True).click()
    await phone.get_by_label("11:00", exact=True).check()
    await phone.get_by_role("button", name="Book this time").click()

    await expect(phone.get_by_role("status")).to_contain_text("your next session is booked")
    [booked] = await ada.active()
    card = phone.locator(f"#s{booked['id']}")
    await expect(card).to_contain_text("Friday 6 March 2026 at 11:00")
    await expect(card).to_contain_text("Session 2 of 8")
    await expect(card.get_by_role("button", name="Confirm")).to_be_visible()
    await expect(phone.locator(f"#next-{ada.series_id}")).to_have_count(0)
    await phone.screenshot(path=str(screenshots / "self-next-02-booked-phone.png"), full_page=True)
    assert (booked["position"], booked["practitioner_id"], booked["status"]) == (2, HART, "booked")
    assert booked["starts_at"] == london(date(2026, 3, 6), 11)
    assert booked["starts_at"].astimezone(LONDON).date() - date(2026, 2, 27) == timedelta(days=7)
