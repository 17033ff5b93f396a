"""The accident in a real browser: a patient double-clicks "Hold these times" in headless
Chromium, then goes Back and submits the schedule again; they see their details form under
their own held times every time, never "someone booked that time a moment ago", and book."""

from __future__ import annotations

import asyncio
import contextlib

from playwright.async_api import Browser, Error, Route, expect

from tests.browser.conftest import PHONE
from tests.browser.test_booking_flow import PATIENT, fill_details, new_page
from tests.conftest import BookingApi

TAKEN = "someone booked that time a moment ago"
TIMEOUT_S = 10


async def test_double_click_then_back_and_submit_again_keeps_the_held_course(
    browser: Browser, booking_api: BookingApi
) -> None:
    api = booking_api
    context, page = await new_page(browser, PHONE)
    await page.goto(api.base + "/")
    await page.get_by_label("Hair mesotherapy course").check()
    await page.get_by_role("button", name="Continue").click()
    await page.get_by_role("link", name="I have had a consultation: continue").click()
    await page.get_by_role("button", name="Continue").click()
    await page.locator("details.day[open] label.slot").first.click()
    await page.get_by_role("button", name="See all sessions").click()
    await expect(page.locator("h1")).to_have_text("Hair mesotherapy course: every session")

    # A human double click: the second click lands while the first answer is still on its way.
    # (Chromium merges two clicks within one task into one submission, so the first request is
    # held here, after the service has answered it, until the second has been sent.)
    posted: list[int] = []
    first_answered, second_sent = asyncio.Event(), asyncio.Event()

    async def hold_route(route: Route) -> None:
        posted.append(len(posted) + 1)
        if len(posted) == 1:
            answer = await route.fetch()  # the service takes the hold now
            first_answered.set()
            await second_sent.wait()
            with contextlib.suppress(Error):  # the browser gave up on it for the second click
                await route.fulfill(response=answer)
        else:
            second_sent.set()
            await route.continue_()

    await page.route("**/book/hold", hold_route)
    button = page.get_by_role("button", name="Hold these times")
    await button.scroll_into_view_if_needed()
    box = await button.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    # The mouse itself, as a hand would: a locator's click would wait for the first navigation.
    await page.mouse.click(x, y)
    await asyncio.wait_for(first_answered.wait(), TIMEOUT_S)
    await page.mouse.click(x, y)
    await expect(page.locator("h1")).to_have_text("Your details")
    assert posted == [1, 2]  # both submits reached the service
    await expect(page.locator("main")).not_to_contain_text(TAKEN)
    await expect(page.locator("ol.sessions li")).to_have_count(8)
    await page.unroute("**/book/hold")
    holds = await api.pool.fetch("SELECT id FROM booking_hold")
    held = await api.pool.fetch("SELECT hold_id FROM appointment WHERE status = 'held'")
    assert len(holds) == 1 and [r["hold_id"] for r in held] == [holds[0]["id"]] * 8
    token = await page.locator('input[name="hold"]').first.get_attribute("value")
    holds = await api.pool.fetch("SELECT id FROM booking_hold")
    held = await api.pool.fetch("SELECT hold_id FROM appointment WHERE status = 'held'")
    assert len(holds) == 1 and [r["hold_id"] for r in held] == [holds[0]["id"]] * 8

    # Back to the schedule, the same times submitted again: the same hold, not a refusal.
    await page.go_back()
    await expect(page.locator("h1")).to_have_text("Hair mesotherapy course: every session")
    await page.get_by_role("button", name="Hold these times").click()
    await expect(page.locator("h1")).to_have_text("Your details")
    await expect(page.locator("main")).not_to_contain_text(TAKEN)
    assert await page.locator('input[name="hold"]').first.get_attribute("value") == token
    assert await api.pool.fetchval("SELECT count(*) FROM booking_hold") == 1

    # And the held course books.
    await fill_details(page, PATIENT)
    await page.get_by_role("button", name="Continue").click()
    await expect(page.locator("h1")).to_have_text("Check your booking")
    await page.get_by_role("button", name="Book now").click()
    await expect(page.locator("h1")).to_have_text(f"You are booked, {PATIENT['first_name']}")
    booked = await api.pool.fetchval("SELECT count(*) FROM appointment WHERE status = 'booked'")
    assert booked == 8
    await context.close()
