"""The next session of a course, proposed after one is completed: held for the patient, asked by
SMS (sent for real through the Twilio stand-in) and email; "C" books it, "R" lets it go and the
desk calls; nobody answering releases it before its hold ends and the patient is told to call.
Two scheduler replicas propose and release each once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest

from services.scheduler.proposals import propose_next_sessions, release_unanswered
from shared.config import Settings
from shared.db.pool import create_pool
from shared.links import open_patient_link
from shared.outbox_plan import stale_reason
from shared.store import appointments, proposals, series, time_off
from shared.store.proposals import Proposal
from tests import factories
from tests.conftest import StandIn
from tests.notifier.conftest import MOBILE, StartNotifier, World
from tests.notifier.test_sms_replies import Phone

LONDON = ZoneInfo("Europe/London")
HOLD = timedelta(hours=48)


def london(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=LONDON).astimezone(UTC)


@pytest.fixture
async def phone(start_notifier: StartNotifier, settings: Settings) -> AsyncIterator[Phone]:
    notifier = await start_notifier()
    async with aiohttp.ClientSession() as http:
        yield Phone(http, notifier, settings)


async def course_after_first_session(world: World, patient_id: int | None = None) -> int:
    """Hair mesotherapy (session 2: 7 days after session 1, 6-10 allowed) with session 1
    completed with Dr Hart on Friday 27 February at 10:00 London; nothing else booked. The
    clock is Monday 2 March 09:00."""
    patient_id = patient_id or world.patient_id
    treatment_id = int(
        await world.pool.fetchval("SELECT id FROM treatment WHERE code = 'hair-mesotherapy'")
    )
    series_id = await series.insert(
        world.pool,
        clinic_id=world.clinic_id,
        patient_id=patient_id,
        treatment_id=treatment_id,
        planned_sessions=8,
        now=world.clock.now(),
    )
    await factories.appointment(
        world.pool,
        clinic_id=world.clinic_id,
        practitioner_id=world.practitioner_id,  # Dr Hart, Monday to Friday
        treatment_id=treatment_id,
        patient_id=patient_id,
        starts_at=london(date(2026, 2, 27), 10),
        now=world.clock.now(),
        status="completed",
        series_id=series_id,
        position=1,
    )
    return series_id


async def the_proposal(world: World, series_id: int) -> Proposal:
    (proposal,) = await proposals.for_series(world.pool, series_id)
    return proposal


async def question_rows(world: World, appointment_id: int) -> dict[str, int]:
    rows = await world.pool.fetch(
        "SELECT id, channel FROM notification WHERE kind = 'session_proposal' "
        "AND appointment_id = $1",
        appointment_id,
    )
    return {r["channel"]: r["id"] for r in rows}


async def status(world: World, appointment_id: int) -> str:
    found = await appointments.get(world.pool, appointment_id)
    assert found is not None
    return found.status


async def calls(world: World) -> list[tuple[int, str]]:
    rows = await world.pool.fetch(
        "SELECT appointment_id, reason FROM call_task WHERE done_at IS NULL ORDER BY id"
    )
    return [(r["appointment_id"], r["reason"]) for r in rows]


async def asked(world: World, series_id: int) -> Proposal:
    """Propose, then let the notifier send the SMS question for real."""
    assert await propose_next_sessions(world.pool, world.clock, hold=HOLD) == 1
    proposal = await the_proposal(world, series_id)
    assert proposal.appointment_id is not None
    sms = (await question_rows(world, proposal.appointment_id))["sms"]
    await world.settled(sms, "sent", "delivered")
    return proposal


async def test_the_next_session_is_held_with_the_same_practitioner_at_the_target_gap(
    world: World, phone: Phone, twilio: StandIn
) -> None:
    series_id = await course_after_first_session(world)
    proposal = await asked(world, series_id)

    assert proposal.status == "asked" and proposal.position == 2
    assert proposal.appointment_id is not None
    held = await appointments.get(world.pool, proposal.appointment_id)
    assert held is not None
    assert held.status == "held" and held.patient_id == world.patient_id
    assert held.series_id == series_id and held.position == 2
    # 7 days on, same practitioner, same local time: Friday 6 March 10:00.
    assert held.starts_at == london(date(2026, 3, 6), 10)
    assert held.practitioner_id == world.practitioner_id
    # Released an hour before the 48 h hold ends.
    assert proposal.answer_by == world.clock.now() + HOLD - timedelta(hours=1)
    assert set(await question_rows(world, held.id)) == {"sms", "email"}

    (sent,) = twilio.twilio.sent_to(MOBILE)
    assert "we have kept Fri 6 Mar 10:00 for your next session at" in sent.body
    assert "Reply C to accept, R for other times (by Wed 4 Mar 08:00)" in sent.body
    assert "mesotherapy" not in sent.body.lower()

    # Once: later runs find the proposal made.
    assert await propose_next_sessions(world.pool, world.clock, hold=HOLD) == 0


async def test_c_books_the_held_session_and_plans_its_confirmation_and_reminders(
    world: World, phone: Phone
) -> None:
    series_id = await course_after_first_session(world)
    proposal = await asked(world, series_id)
    assert proposal.appointment_id is not None

    answer = await phone.send("C")

    assert answer is not None
    assert "your next session is booked for Fri 6 Mar 10:00" in answer
    assert await status(world, proposal.appointment_id) == "booked"
    assert (await the_proposal(world, series_id)).status == "accepted"
    kinds = await world.pool.fetch(
        "SELECT kind FROM notification WHERE appointment_id = $1 AND kind LIKE 'reminder_%'",
        proposal.appointment_id,
    )
    assert {r["kind"] for r in kinds} == {"reminder_72h", "reminder_24h"}
    # The booking confirmation (with its calendar file) by email; no second text.
    confirmations = await world.pool.fetch(
        "SELECT channel FROM notification WHERE appointment_id = $1 "
        "AND kind = 'booking_confirmation'",
        proposal.appointment_id,
    )
    assert [r["channel"] for r in confirmations] == ["email"]
    # Booked: the hold ended, so the hold-expiry sweep cannot cancel it later.
    ended = await world.pool.fetchval(
        "SELECT released_at FROM booking_hold WHERE id = $1", proposal.hold_id
    )
    assert ended is not None
    # A second "C" is about nothing open any more: a person reads it, nothing is booked twice.
    await phone.send("C")
    events = await world.pool.fetchval(
        "SELECT count(*) FROM appointment_event WHERE appointment_id = $1 AND to_status = 'booked'",
        proposal.appointment_id,
    )
    assert events == 1


async def test_r_releases_the_time_and_puts_the_patient_on_the_call_list(
    world: World, phone: Phone, settings: Settings
) -> None:
    series_id = await course_after_first_session(world)
    proposal = await asked(world, series_id)
    assert proposal.appointment_id is not None

    answer = await phone.send("R")

    assert answer is not None
    assert "we have released Fri 6 Mar 10:00. To choose another time, use https://" in answer
    assert "We will also call you." in answer
    # The link is the patient's own private link, minted for this answer and never stored.
    link = next(word for word in answer.split() if word.startswith("https://")).rstrip(".")
    assert link.startswith(settings.public_url + "/s/")
    assert settings.secret_key
    opened = open_patient_link(
        settings.secret_key, link.rpartition("/s/")[2], now=world.clock.now(), current_version=1
    )
    assert opened.patient_id == world.patient_id
    stored = await world.pool.fetchval("SELECT answer FROM inbound_message")
    assert link not in stored and "{private-link}" in stored
    assert await status(world, proposal.appointment_id) == "cancelled"
    assert (await the_proposal(world, series_id)).status == "declined"
    assert await calls(world) == [(proposal.appointment_id, "reschedule_requested")]
    # Not proposed again: the desk finds the time with the patient.
    assert await propose_next_sessions(world.pool, world.clock, hold=HOLD) == 0


async def test_an_unanswered_proposal_is_released_before_its_hold_ends_and_the_patient_told(
    world: World, phone: Phone
) -> None:
    series_id = await course_after_first_session(world)
    proposal = await asked(world, series_id)
    assert proposal.appointment_id is not None

    world.clock.advance(HOLD - timedelta(hours=1, minutes=1))
    assert await release_unanswered(world.pool, world.clock) == 0
    world.clock.advance(timedelta(minutes=1))
    assert await release_unanswered(world.pool, world.clock) == 1

    assert await status(world, proposal.appointment_id) == "cancelled"
    assert (await the_proposal(world, series_id)).status == "released"
    assert await calls(world) == [(proposal.appointment_id, "proposal_unanswered")]
    told = await world.pool.fetch(
        "SELECT id, channel FROM notification WHERE kind = 'proposal_released' AND patient_id = $1",
        world.patient_id,
    )
    assert [r["channel"] for r in told] == ["sms"]
    # The question is closed: a late "C" books nothing and goes to a person.
    late = await phone.send("C")
    assert late is not None and "booked" not in late
    assert await status(world, proposal.appointment_id) == "cancelled"
    assert await release_unanswered(world.pool, world.clock) == 0


async def test_a_question_whose_time_is_no_longer_held_is_not_sent(world: World) -> None:
    """Planned at once but sent later (quiet hours, the daily cap): if the time was let go
    meanwhile, the notifier's send-time check stops it."""
    series_id = await course_after_first_session(world)
    assert await propose_next_sessions(world.pool, world.clock, hold=HOLD) == 1
    proposal = await the_proposal(world, series_id)
    assert proposal.appointment_id is not None
    held = await appointments.get(world.pool, proposal.appointment_id)
    assert held is not None
    assert stale_reason("session_proposal", held.version, {}, held) is None
    await world.pool.execute(
        "UPDATE appointment SET status = 'cancelled' WHERE id = $1", proposal.appointment_id
    )
    gone = await appointments.get(world.pool, proposal.appointment_id)
    reason = stale_reason("session_proposal", held.version, {}, gone)
    assert reason is not None and "no longer held" in reason


async def test_a_patient_who_cannot_be_texted_gets_no_hold(world: World) -> None:
    patient_id = await world.new_patient(mobile="+447700900777", consent=False)
    series_id = await course_after_first_session(world, patient_id)
    assert await propose_next_sessions(world.pool, world.clock, hold=HOLD) == 0
    proposal = await the_proposal(world, series_id)
    assert proposal.status == "skipped" and proposal.appointment_id is None
    held = await world.pool.fetchval("SELECT count(*) FROM appointment WHERE status = 'held'")
    assert held == 0


@pytest.fixture
async def second_pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(db_url)
    yield pool
    await pool.close()


async def test_two_replicas_propose_and_release_each_once(
    world: World, second_pool: asyncpg.Pool, settings: Settings
) -> None:
    courses = [await course_after_first_session(world)]
    for n in range(5):
        patient_id = await world.new_patient(mobile=f"+4477009003{n:02d}")
        courses.append(await course_after_first_session(world, patient_id))

    made = await asyncio.gather(
        propose_next_sessions(world.pool, world.clock, hold=HOLD),
        propose_next_sessions(second_pool, world.clock, hold=HOLD),
    )
    assert sum(made) == len(courses)
    held = await world.pool.fetch("SELECT id FROM appointment WHERE status = 'held'")
    assert len(held) == len(courses)
    questions = await world.pool.fetchval(
        "SELECT count(*) FROM notification WHERE kind = 'session_proposal' AND channel = 'sms'"
    )
    assert questions == len(courses)

    world.clock.advance(HOLD)
    released = await asyncio.gather(
        release_unanswered(world.pool, world.clock), release_unanswered(second_pool, world.clock)
    )
    assert sum(released) == len(courses)
    assert await world.pool.fetchval(
        "SELECT count(*) FROM call_task WHERE reason = 'proposal_unanswered'"
    ) == len(courses)
    assert await world.pool.fetchval(
        "SELECT count(*) FROM notification WHERE kind = 'proposal_released'"
    ) == len(courses)


async def test_a_held_time_staff_cancelled_is_settled_without_a_call_or_a_message(
    world: World,
) -> None:
    series_id = await course_after_first_session(world)
    assert await propose_next_sessions(world.pool, world.clock, hold=HOLD) == 1
    proposal = await the_proposal(world, series_id)
    assert proposal.appointment_id is not None
    async with world.pool.acquire() as conn, conn.transaction():
        await appointments.transition(
            conn,
            proposal.appointment_id,
            "cancelled",
            actor="staff:1",
            now=world.clock.now(),
            reason="booked by phone instead",
        )
    world.clock.advance(HOLD)
    assert await release_unanswered(world.pool, world.clock) == 1
    assert (await the_proposal(world, series_id)).status == "released"
    assert await calls(world) == []
    assert (
        await world.pool.fetchval(
            "SELECT count(*) FROM notification WHERE kind = 'proposal_released'"
        )
        == 0
    )


async def test_a_proposal_beyond_twice_the_target_is_held_for_clinician_review(
    world: World,
) -> None:
    """A clinic whose soft maximum is beyond twice the target: with everyone away until then,
    the proposed session is flagged for review like a staff booking would be."""
    await world.pool.execute(
        "UPDATE treatment_gap SET target_days = 4, min_days = 3, max_days = 12 "
        "WHERE position = 2 AND treatment_id = "
        "(SELECT id FROM treatment WHERE code = 'hair-mesotherapy')"
    )
    for practitioner_id in await world.pool.fetch("SELECT id FROM practitioner"):
        await time_off.insert(
            world.pool,
            practitioner_id["id"],
            starts_at=london(date(2026, 3, 1), 0),
            ends_at=london(date(2026, 3, 8), 0),  # away until Sunday: Monday 9 March is day 10
            reason="conference",
            now=world.clock.now(),
        )
    series_id = await course_after_first_session(world)
    assert await propose_next_sessions(world.pool, world.clock, hold=HOLD) == 1
    proposal = await the_proposal(world, series_id)
    assert proposal.appointment_id is not None
    held = await appointments.get(world.pool, proposal.appointment_id)
    assert held is not None
    assert held.starts_at.astimezone(LONDON).date() == date(2026, 3, 9)
    assert held.needs_review
    assert held.review_reasons == [
        "session 2 is 10 days after session 1, more than twice the target of 4: clinician review"
    ]
