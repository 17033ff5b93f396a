"""A patient who ticks or unticks care texts or emails, on their private page or through the
front desk (the admin API), has the reminders already planned moved to the channel they now
allow, in the transaction that records the consent: none lost, none twice, none on a channel
they refused, and their booking confirmations and notices left as they were."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from html import unescape
from typing import Any

import aiohttp
import pytest

from services.booking.web import csrf
from shared import outbox_plan
from shared.config import Settings
from shared.links import patient_link_token
from tests.outbox.conftest import (
    ALL_CONSENTS,
    NO_CONSENTS,
    Demo,
    Row,
    act,
    book_course,
    booked_ids,
    outbox,
    starts,
)

REMINDERS = frozenset(outbox_plan.REMINDER_LEADS)
SMS_ONLY = {**NO_CONSENTS, "care_sms": True}


def reminders(rows: list[Row], *, status: str = "scheduled") -> list[Row]:
    return [r for r in rows if r.kind in REMINDERS and r.status == status]


def schedule(rows: list[Row]) -> list[tuple[int | None, str, Any]]:
    """What the patient will be reminded of and when, whatever the channel."""
    return sorted((r.appointment_id, r.kind, r.due_at) for r in rows)


async def patient_of(demo: Demo, appointment_id: int) -> int:
    return int(
        await demo.pool.fetchval("SELECT patient_id FROM appointment WHERE id = $1", appointment_id)
    )


async def staff_records(demo: Demo, patient_id: int, kind: str, granted: bool) -> None:
    reply = await demo.call(
        "POST",
        f"/api/v1/patients/{patient_id}/consents",
        role="front_desk",
        json={"kind": kind, "granted": granted, "wording_version": "desk-2026-03"},
    )
    assert reply.status == 201, reply.body


@pytest.fixture
async def http(demo: Demo) -> AsyncIterator[aiohttp.ClientSession]:
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[demo.api.base])
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        yield session


async def patient_ticks(
    demo: Demo,
    settings: Settings,
    http: aiohttp.ClientSession,
    patient_id: int,
    ticked: set[str],
) -> None:
    """The patient opens their private page and saves the consent boxes with `ticked` ticked."""
    assert settings.secret_key
    version = await demo.pool.fetchval("SELECT link_version FROM patient WHERE id = $1", patient_id)
    token = patient_link_token(settings.secret_key, patient_id, version, now=demo.api.clock.now())
    link = f"{demo.api.base}/s/{token}"
    async with http.get(link) as reply:
        assert reply.status == 200
        page = await reply.text()
    found = re.search(rf'name="{csrf.FIELD}" value="([^"]*)"', page)
    assert found
    data = {csrf.FIELD: unescape(found[1]), **dict.fromkeys(ticked, "yes")}
    async with http.post(link + "/consents", data=data, allow_redirects=False) as reply:
        assert reply.status == 303, await reply.text()


# -- each direction ----------------------------------------------------------------------------


async def test_unticking_texts_on_the_private_page_moves_every_reminder_to_email(
    demo: Demo, settings: Settings, http: aiohttp.ClientSession
) -> None:
    ids = await booked_ids(await book_course(demo, consents=ALL_CONSENTS))
    patient_id = await patient_of(demo, ids[0])
    before = await outbox(demo.pool)
    texted = reminders(before)
    assert {r.channel for r in texted} == {"sms"} and len(texted) == 16

    demo.api.clock.advance(timedelta(hours=1))
    await patient_ticks(demo, settings, http, patient_id, {"care_email"})

    rows = await outbox(demo.pool)
    cancelled = [r for r in rows if r.id in {t.id for t in texted}]
    assert {(r.status, r.status_reason) for r in cancelled} == {
        ("cancelled", "consent change: care SMS consent withdrawn; reminders now go by email")
    }
    emailed = reminders(rows)
    assert {r.channel for r in emailed} == {"email"}
    # The same reminders at the same moments, for the same start and version: only the channel
    # changed.
    assert schedule(emailed) == schedule(texted)
    by_cause = {(r.appointment_id, r.kind): r for r in texted}
    for row in emailed:
        was = by_cause[(row.appointment_id, row.kind)]
        assert (row.expires_at, row.appointment_version) == (
            was.expires_at,
            was.appointment_version,
        )
        assert row.dedupe_key == was.dedupe_key.replace(":sms:", ":email:")
    # In the very transaction that recorded the patient's choice.
    consent_tx = await demo.pool.fetchval(
        "SELECT xmin::text FROM patient_consent WHERE patient_id = $1 AND source = 'self_service'"
        " AND kind = 'care_sms'",
        patient_id,
    )
    changed_tx = await demo.pool.fetch(
        "SELECT DISTINCT xmin::text FROM notification WHERE id = ANY($1::bigint[])",
        [r.id for r in cancelled + emailed],
    )
    assert [r["xmin"] for r in changed_tx] == [consent_tx]
    # The audit row of the change says what it did to the messages.
    details = await demo.pool.fetchval(
        "SELECT details FROM audit_log WHERE action = 'consent.record' AND patient_id = $1"
        " AND details->>'source' = 'self_service'",
        patient_id,
    )
    assert details["reminders"] == {
        "channel": "email",
        "cancelled": sorted(r.id for r in cancelled),
        "planned": [r.id for r in emailed],
    }


async def test_ticking_texts_moves_waiting_email_reminders_to_sms_at_their_times(
    demo: Demo, settings: Settings, http: aiohttp.ClientSession
) -> None:
    ids = await booked_ids(await book_course(demo, consents={**NO_CONSENTS, "care_email": True}))
    patient_id = await patient_of(demo, ids[0])
    emailed = reminders(await outbox(demo.pool))
    assert {r.channel for r in emailed} == {"email"} and len(emailed) == 16
    # 70 hours before the first session: its 72 h reminder is still waiting (held by quiet
    # hours, say). The patient was about to get it, so the text replacing it keeps its time.
    first = await starts(demo.pool, ids[0])
    demo.api.clock.set(first - timedelta(hours=70))

    await patient_ticks(demo, settings, http, patient_id, {"care_sms", "care_email"})

    rows = await outbox(demo.pool)
    texted = reminders(rows)
    assert {r.channel for r in texted} == {"sms"}
    assert schedule(texted) == schedule(emailed)
    # Reminders go on one channel, texts first: the email ones are cancelled, saying why.
    assert {(r.status, r.status_reason) for r in rows if r.id in {e.id for e in emailed}} == {
        (
            "cancelled",
            "consent change: texts allowed (care SMS consent), which reminders use first; "
            "reminders now go by sms",
        )
    }


async def test_a_patient_who_ticks_emails_after_booking_without_consent_gets_email_reminders(
    demo: Demo, settings: Settings, http: aiohttp.ClientSession
) -> None:
    ids = await booked_ids(await book_course(demo, consents=NO_CONSENTS))
    patient_id = await patient_of(demo, ids[0])
    assert reminders(await outbox(demo.pool)) == []
    # 30 hours before the first session: "3 days before" would be wrong now, so the first
    # session gets only its 24 h reminder (as if booked now); the others get both.
    first = await starts(demo.pool, ids[0])
    demo.api.clock.set(first - timedelta(hours=30))

    await patient_ticks(demo, settings, http, patient_id, {"care_email"})

    emailed = reminders(await outbox(demo.pool))
    assert {r.channel for r in emailed} == {"email"}
    assert Counter(r.kind for r in emailed) == {"reminder_72h": 7, "reminder_24h": 8}
    assert (ids[0], "reminder_72h") not in {(r.appointment_id, r.kind) for r in emailed}
    for row in emailed:
        start = await starts(demo.pool, row.appointment_id)
        assert row.due_at == start - outbox_plan.REMINDER_LEADS[row.kind]
        assert row.expires_at == start
    # Unticking email (with texts not allowed) takes them back: nothing goes.
    await patient_ticks(demo, settings, http, patient_id, set())
    rows = await outbox(demo.pool)
    assert reminders(rows) == []
    assert {r.status_reason for r in reminders(rows, status="cancelled")} == {
        "consent change: care email consent withdrawn; no channel left for reminders"
    }


async def test_ticking_emails_for_a_patient_who_is_texted_changes_nothing(demo: Demo) -> None:
    # Reminders go on one channel: a patient who allows both is reminded by text only.
    ids = await booked_ids(await book_course(demo, consents=SMS_ONLY))
    patient_id = await patient_of(demo, ids[0])
    before = await outbox(demo.pool)
    await staff_records(demo, patient_id, "care_email", True)
    assert await outbox(demo.pool) == before
    await staff_records(demo, patient_id, "care_email", False)
    assert await outbox(demo.pool) == before


# -- back and forth ----------------------------------------------------------------------------


async def test_toggling_texts_off_and_on_twice_leaves_one_reminder_per_session_and_kind(
    demo: Demo,
) -> None:
    ids = await booked_ids(await book_course(demo, consents=ALL_CONSENTS))
    patient_id = await patient_of(demo, ids[0])
    first_plan = schedule(reminders(await outbox(demo.pool)))
    # At one and the same moment (the clock does not move): each change is its own cause.
    for granted in (False, True, False, True):
        await staff_records(demo, patient_id, "care_sms", granted)
        live = reminders(await outbox(demo.pool))
        assert schedule(live) == first_plan  # one of each, at its moment
        assert {r.channel for r in live} == {"sms" if granted else "email"}
    # Recording the same consent again plans nothing more.
    await staff_records(demo, patient_id, "care_sms", True)
    rows = await outbox(demo.pool)
    assert schedule(reminders(rows)) == first_plan
    # Each change cancelled one row per reminder and planned one: three texts (two cancelled)
    # and two emails (both cancelled) per reminder, each with a key of its own.
    per_cause = Counter(
        (r.appointment_id, r.kind, r.channel, r.status) for r in rows if r.kind in REMINDERS
    )
    assert {(k[2], k[3], n) for k, n in per_cause.items()} == {
        ("sms", "cancelled", 2),
        ("sms", "scheduled", 1),
        ("email", "cancelled", 2),
    }
    keys = sorted(r.dedupe_key for r in reminders(rows) if r.appointment_id == ids[0])
    assert keys == [
        f"{kind}:sms:appt{ids[0]}:v{version}:r2"
        for kind, version in sorted(
            (r.kind, r.appointment_version) for r in reminders(rows) if r.appointment_id == ids[0]
        )
    ]


async def test_two_consent_changes_at_once_leave_reminders_on_the_channel_finally_allowed(
    demo: Demo,
) -> None:
    # Two desks at once: one records that the patient withdrew texts, the other that they agreed
    # to emails. Each change alone leaves no channel, or texts; whichever re-plans last must see
    # the other's change, or the patient ends up with no reminders at all.
    ids = await booked_ids(await book_course(demo, consents=SMS_ONLY))
    patient_id = await patient_of(demo, ids[0])
    first_plan = schedule(reminders(await outbox(demo.pool)))
    for _ in range(3):
        await asyncio.gather(
            staff_records(demo, patient_id, "care_sms", False),
            staff_records(demo, patient_id, "care_email", True),
        )
        live = reminders(await outbox(demo.pool))
        assert schedule(live) == first_plan and {r.channel for r in live} == {"email"}
        # Back to texts only, for the next round.
        await staff_records(demo, patient_id, "care_email", False)
        await staff_records(demo, patient_id, "care_sms", True)
        live = reminders(await outbox(demo.pool))
        assert schedule(live) == first_plan and {r.channel for r in live} == {"sms"}


# -- nobody to remind, and what is not a reminder ----------------------------------------------


async def test_a_patient_without_email_who_unticks_texts_gets_nothing_and_staff_see_why(
    demo: Demo, settings: Settings, http: aiohttp.ClientSession
) -> None:
    ids = await booked_ids(await book_course(demo, consents=ALL_CONSENTS, email=None))
    patient_id = await patient_of(demo, ids[0])
    texted = reminders(await outbox(demo.pool))
    assert len(texted) == 16

    await patient_ticks(demo, settings, http, patient_id, {"care_email"})

    rows = await outbox(demo.pool)
    assert reminders(rows) == []
    assert [r for r in rows if r.id not in {t.id for t in texted} and r.kind in REMINDERS] == []
    # The front desk sees every reminder cancelled, and why, in the patient's messages.
    reply = await demo.call(
        "GET", f"/api/v1/patients/{patient_id}/messages", role="front_desk", params={"limit": 100}
    )
    assert reply.status == 200, reply.body
    shown = {m["id"]: m for m in reply.body["items"] if m["kind"] in REMINDERS}
    assert set(shown) == {r.id for r in texted}
    assert {(m["status"], m["status_reason"]) for m in shown.values()} == {
        ("cancelled", "consent change: care SMS consent withdrawn; no channel left for reminders")
    }


async def test_booking_confirmations_and_notices_do_not_depend_on_care_consents(
    demo: Demo,
) -> None:
    ids = await booked_ids(await book_course(demo, consents=ALL_CONSENTS))
    patient_id = await patient_of(demo, ids[0])
    confirmations = [r for r in await outbox(demo.pool) if r.kind == "booking_confirmation"]
    assert {r.channel for r in confirmations} == {"email", "sms"}

    await staff_records(demo, patient_id, "care_sms", False)
    await staff_records(demo, patient_id, "care_email", False)
    rows = await outbox(demo.pool)
    assert reminders(rows) == []
    # Still waiting, untouched: the email needs no care consent; the text is checked against
    # care SMS consent by the notifier when it is sent.
    assert [r for r in rows if r.kind == "booking_confirmation"] == confirmations
    assert outbox_plan.needs_consent("booking_confirmation", "email") is None

    # A session cancelled afterwards is still told by email, whatever the care consents.
    reply = await act(demo, ids[3], "cancel", {"reason": "patient away"})
    assert reply.status == 200, reply.body
    notices = [r for r in await outbox(demo.pool) if r.kind == "cancellation_notice"]
    assert [(r.channel, r.status) for r in notices] == [("email", "scheduled")]
    # Granting texts again brings back reminders, not the notices or confirmations.
    await staff_records(demo, patient_id, "care_sms", True)
    after = await outbox(demo.pool)
    assert [r for r in after if r.kind not in REMINDERS] == [
        r for r in rows + notices if r.kind not in REMINDERS
    ]
    assert {r.appointment_id for r in reminders(after)} == set(ids) - {ids[3]}


async def test_an_sms_opt_out_recorded_outside_http_moves_reminders_to_email(demo: Demo) -> None:
    # The SMS STOP/START handler calls the same function: an opt-out recorded directly moves the
    # reminders to email with the opt-out as the reason.
    ids = await booked_ids(await book_course(demo, consents=ALL_CONSENTS))
    patient_id = await patient_of(demo, ids[0])
    now = demo.api.clock.now()
    async with demo.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE patient SET sms_opted_out_at = $2 WHERE id = $1", patient_id, now
        )
        replanned = await outbox_plan.on_consents_changed(conn, patient_id, now=now)
    assert replanned.channel == "email"
    rows = await outbox(demo.pool)
    assert {r.status_reason for r in rows if r.id in replanned.cancelled} == {
        "consent change: patient opted out of SMS; reminders now go by email"
    }
    assert sorted(r.id for r in reminders(rows)) == replanned.planned
    # Once more with nothing changed: nothing happens.
    async with demo.pool.acquire() as conn, conn.transaction():
        again = await outbox_plan.on_consents_changed(conn, patient_id, now=now)
    assert (again.cancelled, again.planned) == ([], [])
