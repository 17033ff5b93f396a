"""Aftercare, end to end: a clinician completes a session through the admin API, the completion
plans the treatment's aftercare (SMS and email per the patient's care consents, inside the
clinic's hours), the notifier sends it through the Twilio stand-in and aiosmtpd, and the link in
it opens the aftercare page of the booking service. The clock moves; nothing sleeps."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shared import links
from shared.clock import FrozenClock
from shared.config import Settings
from shared.domain.aftercare import plan_aftercare
from shared.store import appointments
from tests import factories
from tests.conftest import BookingApi, SmtpSink, StandIn
from tests.notifier.conftest import EMAIL, MOBILE, Notifier, StartNotifier, World, eventually

LONDON = ZoneInfo("Europe/London")
LINK = re.compile(r"https://clinic\.example\.test/aftercare/[A-Za-z0-9_-]+")
MESO_INSTRUCTION = "Do not wash your hair for 24 hours."
MESO_NORMAL = "Swelling of the forehead for 1 to 4 days is normal too."


def london(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=LONDON).astimezone(UTC)


async def treatment_id(world: World, code: str) -> int:
    return int(await world.pool.fetchval("SELECT id FROM treatment WHERE code = $1", code))


async def checked_in(
    world: World, code: str, starts_at: datetime, patient_id: int | None = None
) -> int:
    """A session of `code` the patient has been checked in for (ready to be completed)."""
    return await factories.appointment(
        world.pool,
        clinic_id=world.clinic_id,
        practitioner_id=world.practitioner_id,
        treatment_id=await treatment_id(world, code),
        patient_id=patient_id or world.patient_id,
        starts_at=starts_at,
        now=world.clock.now(),
        status="checked_in",
        buffers=(timedelta(0), timedelta(0)),
    )


async def complete(api: BookingApi, appointment_id: int, role: str = "clinician") -> None:
    found = await appointments.get(api.pool, appointment_id)
    assert found is not None
    reply = await api.call(
        "POST",
        f"/api/v1/appointments/{appointment_id}/complete",
        role=role,
        headers={"If-Match": f'"{found.version}"'},
        json={"record": {"product": "Dermaheal HL", "lot_number": "LOT-1"}},
    )
    assert reply.status == 200, reply.body


async def aftercare_rows(world: World, appointment_id: int) -> list[dict[str, Any]]:
    rows = await world.pool.fetch(
        """
        SELECT id, channel, due_at, status, urgent, context FROM notification
        WHERE kind = 'aftercare' AND appointment_id = $1 ORDER BY channel
        """,
        appointment_id,
    )
    return [dict(r) for r in rows]


async def page(api: BookingApi, url: str) -> tuple[int, str]:
    path = url.removeprefix("https://clinic.example.test")
    async with api.http.get(api.base + path) as response:
        return response.status, await response.text()


async def a_recovery_sweep(notifier: Notifier, clock: FrozenClock, delta: timedelta) -> None:
    await notifier.advance(clock, delta)


# -- completion plans and sends it -----------------------------------------------------------------


async def test_completing_a_mesotherapy_session_sends_aftercare_by_sms_and_email_with_the_link(
    world: World,
    booking_api: BookingApi,
    start_notifier: StartNotifier,
    twilio: StandIn,
    smtp: SmtpSink,
    clock: FrozenClock,
) -> None:
    # Monday 2 March 2026, 09:00 in London: the 08:00 session is over.
    session = await checked_in(world, "hair-mesotherapy", clock.now() - timedelta(hours=1))
    await complete(booking_api, session)

    rows = await aftercare_rows(world, session)
    assert [r["channel"] for r in rows] == ["email", "sms"]
    # Within the hour, and not as an urgent message (quiet hours still apply to it).
    assert all(r["due_at"] == clock.now() + timedelta(minutes=15) for r in rows)
    assert not any(r["urgent"] for r in rows)

    notifier = await start_notifier()
    await notifier.advance(clock, timedelta(minutes=15))
    for row in rows:
        await world.settled(row["id"], "sent", "delivered")

    [sms] = twilio.twilio.sent_to(MOBILE)
    assert "Regimen Demo Hair Clinic: aftercare instructions for today's session" in sms.body
    assert "020 7946 0000" in sms.body and "In an emergency call 999." in sms.body
    # Minimum necessary: the SMS never names the treatment nor gives the instructions.
    for word in ("mesotherapy", "Hair mesotherapy", "hair dye", "wash"):
        assert word.lower() not in sms.body.lower()
    [sms_link] = LINK.findall(sms.body)

    [email] = smtp.recorder.emails_to(EMAIL)
    assert email.subject == "Your aftercare instructions from Regimen Demo Hair Clinic"
    assert "mesotherapy" not in (email.subject or "").lower()
    assert MESO_INSTRUCTION in email.body and MESO_NORMAL in email.body
    assert "If it lasts longer than 5 days, call us." in email.body
    assert "A fever of 38 °C or more." in email.body
    assert "In an emergency call 999 now" in email.body
    assert sms_link in email.body  # one link per session, whatever the channel

    status, text = await page(booking_api, sms_link)
    assert status == 200
    assert "Hello Alex" in text and "Morgan" not in text  # the first name, nothing more
    assert MESO_INSTRUCTION in text and MESO_NORMAL in text
    assert "In an emergency call 999 now." in text
    assert "020 7946 0000" in text


async def test_a_session_completed_at_19_50_sends_its_aftercare_at_08_00_next_morning(
    world: World,
    booking_api: BookingApi,
    start_notifier: StartNotifier,
    twilio: StandIn,
    clock: FrozenClock,
) -> None:
    evening = london(date(2026, 3, 2), 19, 50)
    clock.set(evening)
    session = await checked_in(world, "prp-hair", evening - timedelta(hours=1))
    await complete(booking_api, session)
    [_, sms_row] = await aftercare_rows(world, session)
    next_morning = london(date(2026, 3, 3), 8, 0)
    assert sms_row["due_at"] == next_morning

    notifier = await start_notifier()
    await a_recovery_sweep(notifier, clock, timedelta(minutes=20))  # 20:10: nothing goes
    assert (await world.row(sms_row["id"])).status == "scheduled"
    assert twilio.twilio.sent_to(MOBILE) == []

    await notifier.advance(clock, next_morning - clock.now())
    sent = await world.settled(sms_row["id"], "sent", "delivered")
    assert sent.sent_at is not None and sent.sent_at >= next_morning
    [sms] = twilio.twilio.sent_to(MOBILE)
    # Sent the morning after, it says so: "today's" would be untrue.
    assert "aftercare instructions for yesterday's session" in sms.body


async def test_the_patients_own_quiet_hours_hold_aftercare_planned_in_clinic_hours(
    world: World,
    booking_api: BookingApi,
    start_notifier: StartNotifier,
    twilio: StandIn,
    clock: FrozenClock,
) -> None:
    """Planned inside the clinic's hours, the SMS still waits for the window of a patient who
    lives in another zone (the notifier's quiet hours, applied at send time)."""
    abroad = await world.new_patient(mobile="+447700900124", email=None)
    await world.pool.execute(
        "UPDATE patient SET time_zone = 'America/New_York' WHERE id = $1", abroad
    )
    session = await checked_in(
        world, "scalp-microneedling", clock.now() - timedelta(hours=1), abroad
    )
    await complete(booking_api, session)  # 09:15 London is 04:15 in New York
    [sms_row] = await aftercare_rows(world, session)

    notifier = await start_notifier()
    await a_recovery_sweep(notifier, clock, timedelta(minutes=15))

    async def deferred() -> bool:
        return (await world.row(sms_row["id"])).due_at > clock.now()

    await eventually(deferred, what="the SMS put off to the patient's morning")
    row = await world.row(sms_row["id"])
    assert row.due_at.astimezone(ZoneInfo("America/New_York")).time() == time(8, 0)
    assert twilio.twilio.sent_to("+447700900124") == []


# -- who gets what ---------------------------------------------------------------------------------


async def test_a_patient_with_email_only_gets_aftercare_by_email_only(
    world: World, booking_api: BookingApi, clock: FrozenClock
) -> None:
    patient_id = await world.new_patient(mobile=None, email="emailonly@example.com")
    session = await checked_in(
        world, "hair-mesotherapy", clock.now() - timedelta(hours=1), patient_id
    )
    await complete(booking_api, session)
    assert [r["channel"] for r in await aftercare_rows(world, session)] == ["email"]


async def test_a_patient_who_withdrew_care_sms_consent_gets_no_aftercare_sms(
    world: World, booking_api: BookingApi, clock: FrozenClock
) -> None:
    await factories.consent(world.pool, world.patient_id, {"care_sms": False}, now=clock.now())
    session = await checked_in(world, "hair-mesotherapy", clock.now() - timedelta(hours=1))
    await complete(booking_api, session)
    assert [r["channel"] for r in await aftercare_rows(world, session)] == ["email"]


async def test_a_consultation_plans_no_aftercare(
    world: World, booking_api: BookingApi, clock: FrozenClock
) -> None:
    session = await checked_in(world, "consultation", clock.now() - timedelta(hours=1))
    await complete(booking_api, session)
    assert await aftercare_rows(world, session) == []


async def test_aftercare_is_planned_once_per_session_and_channel(
    world: World, booking_api: BookingApi, clock: FrozenClock
) -> None:
    session = await checked_in(world, "hair-mesotherapy", clock.now() - timedelta(hours=1))
    await complete(booking_api, session)
    completed = await appointments.get(world.pool, session)
    assert completed is not None
    async with world.pool.acquire() as conn:
        # Planning again (a retried transaction, a second caller) adds nothing.
        assert await plan_aftercare(conn, completed, now=clock.now()) == []
    assert len(await aftercare_rows(world, session)) == 2


# -- the aftercare page and its link ---------------------------------------------------------------


async def completed_session(world: World, booking_api: BookingApi, code: str = "prp-hair") -> int:
    session = await checked_in(world, code, world.clock.now() - timedelta(hours=1))
    await complete(booking_api, session)
    return session


def token_for(settings: Settings, appointment_id: int, version: int, expires: datetime) -> str:
    assert settings.secret_key
    return links.aftercare_link_token(
        settings.secret_key, appointment_id, version, expires_at=expires
    )


@pytest.mark.parametrize(("region", "number"), [("GB", "999"), ("DE", "112"), ("US", "911")])
async def test_the_page_shows_the_emergency_number_of_the_clinics_country(
    world: World, booking_api: BookingApi, settings: Settings, region: str, number: str
) -> None:
    session = await completed_session(world, booking_api)
    await world.pool.execute("UPDATE clinic SET region = $1 WHERE id = $2", region, world.clinic_id)
    token = token_for(settings, session, 1, world.clock.now() + timedelta(days=30))
    status, text = await page(booking_api, f"/aftercare/{token}")
    assert status == 200
    assert f"In an emergency call {number} now." in text
    assert "No hair dye or chemical hair treatments for 14 days." in text  # PRP's own
    assert "Redness, small bumps, tenderness, mild swelling or bruising for 2 to 5 days." in text
    assert "If it lasts longer than 5 days, call us." in text
    assert "Difficulty breathing, or tightness in your throat." in text
    assert "PRP" not in text  # the page does not name the treatment either


async def test_a_forged_or_foreign_link_gets_a_friendly_refusal_not_the_page(
    world: World, booking_api: BookingApi, settings: Settings
) -> None:
    session = await completed_session(world, booking_api)
    expires = world.clock.now() + timedelta(days=30)
    good = token_for(settings, session, 1, expires)
    assert (await page(booking_api, f"/aftercare/{good}"))[0] == 200
    other = await world.new_patient(first_name="Bea")
    not_done = await checked_in(world, "prp-hair", world.clock.now() + timedelta(hours=3), other)

    forged = [
        good[:-2] + ("AA" if good[-2:] != "AA" else "BB"),  # a changed signature
        good[:10],  # truncated
        "%00%ff",
        # signed under another key, for this session
        links.aftercare_link_token("another-key-" + "y" * 32, session, 1, expires_at=expires),
        # the patient's own private-page link is no aftercare link
        links.patient_link_token(settings.secret_key or "", world.patient_id, 1, now=expires),
        # a genuine link of a session that is not completed (someone else's, booked)
        token_for(settings, not_done, 1, expires),
    ]
    for token in forged:
        status, text = await page(booking_api, f"/aftercare/{token}")
        assert status == 404, token
        assert "This link is not valid" in text and "In an emergency call 999 now." in text
        assert MESO_INSTRUCTION not in text and "Alex" not in text and "Bea" not in text
    # And an aftercare link opens none of the patient's private pages.
    async with booking_api.http.get(booking_api.base + f"/s/{good}") as response:
        assert response.status == 404
        assert "Alex" not in await response.text()


async def test_an_expired_or_replaced_link_says_so_and_shows_no_instructions(
    world: World, booking_api: BookingApi, settings: Settings, clock: FrozenClock
) -> None:
    session = await completed_session(world, booking_api)
    token = token_for(settings, session, 1, clock.now() + timedelta(days=30))
    clock.advance(timedelta(days=30, hours=1))
    status, text = await page(booking_api, f"/aftercare/{token}")
    assert status == 410 and "This aftercare link has expired" in text
    assert "Do not wash" not in text and "020 7946 0000" in text

    fresh = token_for(settings, session, 1, clock.now() + timedelta(days=30))
    await world.pool.execute(
        "UPDATE patient SET link_version = link_version + 1 WHERE id = $1", world.patient_id
    )
    status, text = await page(booking_api, f"/aftercare/{fresh}")
    assert status == 410 and "has been replaced" in text and "Do not wash" not in text


# -- the template through the admin API ------------------------------------------------------------


def edited(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "instructions": ["Keep the scalp dry until tomorrow morning.", "No swimming for 3 days."],
        "normal_course": "Some redness for up to 3 days.",
        "normal_days": 3,
        "call_when": ["A fever.", "Pus."],
        "emergency_signs": ["Trouble breathing."],
    }
    body.update(changes)
    return body


async def test_editing_the_template_changes_what_the_next_completion_sends(
    world: World,
    booking_api: BookingApi,
    start_notifier: StartNotifier,
    smtp: SmtpSink,
    clock: FrozenClock,
) -> None:
    meso = await treatment_id(world, "hair-mesotherapy")
    path = f"/api/v1/treatments/{meso}/aftercare"
    before = await completed_session(world, booking_api, "hair-mesotherapy")

    reply = await booking_api.call("GET", path, role="front_desk")
    assert reply.status == 200 and MESO_INSTRUCTION in reply.body["instructions"]
    assert reply.headers["ETag"] == '"1"'
    assert (await booking_api.call("PUT", path, role="front_desk", json=edited())).status == 403
    reply = await booking_api.call(
        "PUT", path, role="clinician", json=edited(), headers={"If-Match": '"1"'}
    )
    assert reply.status == 200, reply.body
    assert reply.body["version"] == 2 and reply.body["updated_by"].endswith("(clinician)")
    # A stale edit does not overwrite this one.
    stale = await booking_api.call(
        "PUT", path, role="admin", json=edited(normal_days=9), headers={"If-Match": '"1"'}
    )
    assert stale.status == 412

    after = await completed_session(world, booking_api, "hair-mesotherapy")
    notifier = await start_notifier()
    await notifier.advance(clock, timedelta(minutes=15))
    for row in await aftercare_rows(world, before) + await aftercare_rows(world, after):
        await world.settled(row["id"], "sent", "delivered")

    emails = smtp.recorder.emails_to(EMAIL)
    assert len(emails) == 2
    new = [e for e in emails if "Keep the scalp dry until tomorrow morning." in e.body]
    old = [e for e in emails if MESO_INSTRUCTION in e.body]
    assert len(new) == 1 and len(old) == 1  # the one planned before the edit keeps its text
    assert "If it lasts longer than 3 days, call us." in new[0].body
    assert "Trouble breathing." in new[0].body


async def test_bad_templates_are_refused_naming_each_field(
    world: World, booking_api: BookingApi
) -> None:
    meso = await treatment_id(world, "hair-mesotherapy")
    reply = await booking_api.call(
        "PUT",
        f"/api/v1/treatments/{meso}/aftercare",
        role="admin",
        json=edited(instructions=[], normal_days=0, call_when=["  "], extra=1),
    )
    assert reply.status == 422
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    paths = {e["path"] for e in reply.body["errors"]}
    assert {"instructions", "normal_days", "call_when.0", "extra"} <= paths
    consultation = await treatment_id(world, "consultation")
    missing = await booking_api.call(
        "GET", f"/api/v1/treatments/{consultation}/aftercare", role="admin"
    )
    assert missing.status == 404 and "no aftercare template" in missing.body["detail"]
    unknown = await booking_api.call("GET", "/api/v1/treatments/999999/aftercare", role="admin")
    assert unknown.status == 404


async def test_a_new_procedure_starts_with_the_default_aftercare_and_a_visit_without(
    booking_api: BookingApi,
) -> None:
    async def create(code: str, needs_consultation: bool) -> int:
        reply = await booking_api.call(
            "POST",
            "/api/v1/treatments",
            role="admin",
            json={
                "clinic_id": booking_api.clinic_id,
                "code": code,
                "name": code.title(),
                "duration_minutes": 30,
                "needs_consultation": needs_consultation,
            },
        )
        assert reply.status == 201, reply.body
        return int(reply.body["id"])

    procedure = await create("scalp-booster", True)
    review = await create("review-visit", False)
    got = await booking_api.call("GET", f"/api/v1/treatments/{procedure}/aftercare", role="admin")
    assert got.status == 200 and MESO_INSTRUCTION in got.body["instructions"]
    got = await booking_api.call("GET", f"/api/v1/treatments/{review}/aftercare", role="admin")
    assert got.status == 404
    removed = await booking_api.call(
        "DELETE", f"/api/v1/treatments/{procedure}/aftercare", role="clinician"
    )
    assert removed.status == 204
    got = await booking_api.call("GET", f"/api/v1/treatments/{procedure}/aftercare", role="admin")
    assert got.status == 404
