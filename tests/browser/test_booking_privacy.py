"""What a stranger can learn or change through the booking form with what a stranger can know
(a patient's mobile or email): nothing. Plain HTTP, as an attacker's script would do it."""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from services.notifier.app import create_app as create_notifier
from shared.config import Settings
from shared.links import open_patient_link
from shared.store import audit, form_differences, patients
from shared.store import consents as consent_store
from tests import factories
from tests.browser.conftest import browser_jar
from tests.browser.test_booking_http import VALID, held_details_page, hidden
from tests.conftest import BookingApi, SmtpSink, StandIn, serve_app
from tests.notifier.conftest import eventually

KNOWN_MOBILE = "+447911123456"  # VALID's "07911 123456", normalised


async def known_patient(api: BookingApi, **fields: Any) -> patients.Patient:
    """Grace, already a patient (staff booked her by phone): care SMS allowed, no email."""
    patient_id = await factories.patient(
        api.pool,
        clinic_id=api.clinic_id,
        first_name="Grace",
        last_name="Hopper",
        mobile=fields.get("mobile", KNOWN_MOBILE),
        email=fields.get("email"),
        date_of_birth=None,
        now=api.clock.now(),
    )
    await factories.consent(
        api.pool, patient_id, {"care_sms": True}, source="staff", now=api.clock.now()
    )
    found = await patients.get(api.pool, patient_id)
    assert found is not None
    return found


async def submit(
    api: BookingApi, http: aiohttp.ClientSession, **changes: str
) -> tuple[aiohttp.ClientResponse, str, dict[str, str]]:
    """Hold a consultation and submit the details form; (the answer to the submit, the page
    it leads to, the form data used)."""
    page = await held_details_page(api, http)
    data = {
        **VALID,
        **changes,
        "hold": hidden(page, "hold"),
        "csrf_token": hidden(page, "csrf_token"),
    }
    async with http.post(api.base + "/book/confirm", data=data, allow_redirects=False) as reply:
        assert reply.status == 303, await reply.text()
        location = reply.headers["Location"]
    async with http.get(api.base + location) as shown:
        assert shown.status == 200
        return reply, await shown.text(), data


async def test_booking_with_a_known_mobile_shows_no_link_no_name_and_changes_nothing(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    api = booking_api
    grace = await known_patient(api)
    consents_before = await consent_store.current(api.pool, grace.id)
    reply, page, _ = await submit(
        api, http, email="attacker@example.com", care_email="yes", marketing_sms="yes"
    )
    location = reply.headers["Location"]
    assert location.startswith("/book/sent?") and "link" not in location
    assert "/s/" not in page and "Grace" not in page and "Hopper" not in page
    assert "attacker@example.com" not in page and "Ada" not in page
    assert "your booking is made" in page
    # Her record, consents and all, is exactly as it was: no blank email filled in.
    after = await patients.get(api.pool, grace.id)
    assert after == grace
    assert await consent_store.current(api.pool, grace.id) == consents_before
    # The sessions are hers, flagged, with what was typed kept for staff to compare.
    booked = await api.pool.fetch("SELECT patient_id, needs_review FROM appointment")
    assert [(r["patient_id"], r["needs_review"]) for r in booked] == [(grace.id, True)]
    [kept] = await form_differences.for_patient(api.pool, grace.id)
    assert kept.submitted["email"] == "attacker@example.com"
    assert kept.submitted["first_name"] == "Ada"
    assert kept.submitted["consents"]["marketing_sms"] is True


async def test_the_link_goes_to_the_contacts_on_file_in_the_confirmation(
    booking_api: BookingApi,
    http: aiohttp.ClientSession,
    settings: Settings,
    db_url: str,
    twilio: StandIn,
    smtp: SmtpSink,
) -> None:
    api = booking_api
    grace = await known_patient(api)
    await submit(api, http, email="attacker@example.com", care_email="yes")
    notifier = create_notifier(
        settings.with_overrides(sms_segments_per_second=0), api.clock, db_url
    )
    runner, _ = await serve_app(notifier)
    try:

        async def sent() -> bool:
            return bool(twilio.twilio.sent_to(KNOWN_MOBILE))

        await eventually(sent, what="the booking confirmation SMS")
    finally:
        await runner.cleanup()
    # Grace's own phone gets the confirmation with her private link; the address the stranger
    # typed gets nothing at all.
    [sms] = twilio.twilio.sent_to(KNOWN_MOBILE)
    token = re.search(r"/s/([A-Za-z0-9_-]+)", sms.body)
    assert token, sms.body
    assert settings.secret_key is not None
    link = open_patient_link(settings.secret_key, token.group(1), now=api.clock.now())
    assert link.patient_id == grace.id
    assert len(twilio.twilio.messages) == 1
    assert smtp.recorder.items("email") == []


async def test_a_new_patient_sees_their_link_and_is_told_truthfully_how_it_is_sent(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    api = booking_api
    reply, page, _ = await submit(api, http)
    assert reply.headers["Location"].startswith("/book/booked?link=")
    assert "You are booked, Ada" in page and "/s/" in page
    assert "with your confirmation, by email and by text message" in page
    rows = await api.pool.fetch(
        "SELECT channel FROM notification WHERE kind = $1", "booking_confirmation"
    )
    assert sorted(r["channel"] for r in rows) == ["email", "sms"]
    # Without an email and without texts, the page says to keep the link, and nothing is sent.
    async with aiohttp.ClientSession(cookie_jar=browser_jar(api)) as other:
        _, quiet, _ = await submit(
            api, other, mobile="07400 123456", email="", care_sms="", first_name="Quiet"
        )
    assert "keep this link now" in quiet
    assert (
        await api.pool.fetchval(
            "SELECT count(*) FROM notification n JOIN patient p ON p.id = n.patient_id "
            "WHERE p.first_name = 'Quiet' AND n.kind = 'booking_confirmation'"
        )
        == 0
    )


async def test_submitting_a_booked_hold_again_never_shows_a_link(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    """The hold token of a booked hold (a double click, Back then submit, or the token copied
    from another browser) leads to the page without any link or name."""
    api = booking_api
    page = await held_details_page(api, http)
    data = {**VALID, "hold": hidden(page, "hold"), "csrf_token": hidden(page, "csrf_token")}
    async with http.post(api.base + "/book/confirm", data=data, allow_redirects=False) as first:
        assert first.headers["Location"].startswith("/book/booked?link=")
    for step in ("/book/confirm", "/book/review"):
        async with http.post(api.base + step, data=data, allow_redirects=False) as again:
            assert again.status == 303
            assert again.headers["Location"].startswith("/book/sent?"), step
    assert await api.pool.fetchval("SELECT count(*) FROM appointment WHERE status = 'booked'") == 1


async def test_booked_page_and_calendar_reads_are_audited_and_old_links_refused(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    api = booking_api
    reply, _, _ = await submit(api, http)
    booked_url = api.base + reply.headers["Location"]
    token = booked_url.split("link=", 1)[1]
    async with http.get(api.base + "/book/calendar.ics", params={"link": token}) as ics:
        assert ics.status == 200
    patient_id = int(await api.pool.fetchval("SELECT id FROM patient"))
    reads = await audit.list_page(
        api.pool,
        patient_id=patient_id,
        entity=None,
        entity_id=None,
        action="patient.read",
        since=None,
        until=None,
        before_id=None,
        limit=10,
    )
    assert sorted(r.details["page"] for r in reads) == ["booked", "calendar"]
    # Staff send a new link: the one on the booked page stops working.
    await patients.renew_links(api.pool, patient_id, now=api.clock.now())
    async with http.get(booked_url) as refused:
        assert refused.status == 404
    async with http.get(api.base + "/book/calendar.ics", params={"link": token}) as refused:
        assert refused.status == 404
