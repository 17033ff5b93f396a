"""Course progression, as the scheduler drives it: the last session completed completes the
course and plans one maintenance reminder; an unbooked next session past its gap's soft maximum
goes on the call list once; every sweep acts once with two replicas on one database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.scheduler.courses import complete_finished_courses, file_overdue_gaps
from services.scheduler.proposals import proposal_sweeps, propose_next_sessions
from shared.store import call_tasks, proposals
from tests import factories
from tests.appointments.conftest import COMPLETION, HART, PATEL, Desk, iso, london


async def consent(desk: Desk, patient_id: int | None = None, **granted: bool) -> None:
    await factories.consent(
        desk.pool,
        patient_id or desk.patient_id,
        granted or {"care_sms": True},  # type: ignore[arg-type]
        now=desk.api.clock.now(),
    )


async def series_status(desk: Desk, series_id: int) -> str:
    return str(await desk.pool.fetchval("SELECT status FROM series WHERE id = $1", series_id))


async def maintenance_rows(desk: Desk, patient_id: int | None = None) -> list[dict[str, Any]]:
    rows = await desk.pool.fetch(
        """
        SELECT id, channel, due_at, expires_at, status, appointment_id, context
        FROM notification WHERE kind = 'maintenance_reminder' AND patient_id = $1 ORDER BY id
        """,
        patient_id or desk.patient_id,
    )
    return [dict(r) for r in rows]


async def gap_calls(desk: Desk) -> list[call_tasks.CallTask]:
    tasks = await call_tasks.list_page(
        desk.pool, clinic_id=None, open_only=False, after=None, limit=500
    )
    return [t for t in tasks if t.reason == "gap_overdue"]


async def prp_course_at_its_last_session(desk: Desk) -> tuple[int, list[int]]:
    """PRP for hair (4 sessions, 28-day gaps, maintenance every 150 days): three sessions done,
    the fourth checked in an hour ago (08:00 London on Monday 2 March)."""
    now = desk.api.clock.now()
    last = now - timedelta(hours=1)
    starts = [last - timedelta(days=28 * k) for k in (3, 2, 1, 0)]
    return await desk.course(
        starts, code="prp-hair", statuses=["completed", "completed", "completed", "checked_in"]
    )


# -- completion and the maintenance reminder ---------------------------------------------------


async def test_completing_the_last_session_completes_the_course_and_plans_one_reminder(
    desk: Desk,
) -> None:
    await consent(desk, care_sms=True, care_email=True)
    series_id, ids = await prp_course_at_its_last_session(desk)
    assert await complete_finished_courses(desk.pool, desk.api.clock) == 0  # still checked in

    reply = await desk.act(ids[3], "complete", role="clinician", json=COMPLETION)
    assert reply.status == 200, reply.body
    assert await complete_finished_courses(desk.pool, desk.api.clock) == 1

    assert await series_status(desk, series_id) == "completed"
    logged = await desk.audit("series.complete", series_id)
    assert len(logged) == 1
    assert logged[0]["actor_kind"] == "system"
    assert logged[0]["patient_id"] == desk.patient_id
    assert logged[0]["details"]["last_appointment_id"] == ids[3]
    (row,) = await maintenance_rows(desk)
    # 150 local days after 08:00 GMT on 2 March is 08:00 BST on 30 July: the same wall time.
    assert row["due_at"] == london(date(2026, 7, 30), 8)
    assert row["due_at"] == datetime(2026, 7, 30, 7, 0, tzinfo=UTC)
    assert row["channel"] == "sms"  # one channel, like a reminder: SMS before email
    assert row["status"] == "scheduled"
    assert row["appointment_id"] == ids[3]
    assert row["expires_at"] > row["due_at"]
    # A scheduled message like the reminders: not urgent, so quiet hours and the daily cap
    # apply to it when it is due.
    assert (
        await desk.pool.fetchval("SELECT urgent FROM notification WHERE id = $1", row["id"])
        is False
    )
    assert logged[0]["details"]["maintenance_notification_ids"] == [row["id"]]

    # Later runs, and consent changing in between, plan nothing more.
    await consent(desk, care_sms=False, care_email=True)
    assert await complete_finished_courses(desk.pool, desk.api.clock) == 0
    assert len(await maintenance_rows(desk)) == 1
    assert len(await desk.audit("series.complete", series_id)) == 1


async def test_a_course_with_a_session_still_ahead_or_a_missed_last_session_stays_active(
    desk: Desk,
) -> None:
    await consent(desk)
    now = desk.api.clock.now()
    # All four planned sessions done but a fifth (a variable-length course) still booked.
    extra, _ = await desk.course(
        [now - timedelta(days=28 * k) for k in (4, 3, 2, 1)] + [now + timedelta(days=5)],
        code="scalp-microneedling",
        statuses=["completed"] * 4 + ["booked"],
    )
    await desk.pool.execute("UPDATE series SET planned_sessions = 4 WHERE id = $1", extra)
    # The last planned session was missed: the course is not finished (it needs rebooking).
    missed, _ = await desk.course(
        [now - timedelta(days=28 * k, hours=2) for k in (3, 2, 1, 0)],
        code="prp-hair",
        statuses=["completed", "completed", "completed", "no_show"],
        practitioner_id=PATEL,
    )
    assert await complete_finished_courses(desk.pool, desk.api.clock) == 0
    assert await series_status(desk, extra) == "active"
    assert await series_status(desk, missed) == "active"
    assert await maintenance_rows(desk) == []


async def test_reminder_follows_consent_or_is_not_planned_but_the_course_completes(
    desk: Desk,
) -> None:
    email_only = await factories.patient(
        desk.pool,
        clinic_id=desk.api.clinic_id,
        first_name="Emma",
        last_name="Mail",
        mobile="+447700900555",
        email="emma@example.com",
        date_of_birth=None,
        now=desk.api.clock.now(),
    )
    await consent(desk, email_only, care_sms=False, care_email=True)
    # desk's own patient gave no care consent at all
    silent, _ = await prp_course_at_its_last_session(desk)
    await desk.pool.execute(
        "UPDATE appointment SET status = 'completed' WHERE series_id = $1", silent
    )
    desk.patient_id, own = email_only, desk.patient_id
    emailed, _ = await desk.course(
        [desk.api.clock.now() - timedelta(days=28 * k, hours=3) for k in (3, 2, 1, 0)],
        code="prp-hair",
        statuses=["completed"] * 4,
        practitioner_id=PATEL,
    )
    desk.patient_id = own

    assert await complete_finished_courses(desk.pool, desk.api.clock) == 2
    assert await series_status(desk, silent) == "completed"
    assert await maintenance_rows(desk) == []
    assert [r["channel"] for r in await maintenance_rows(desk, email_only)] == ["email"]
    assert await series_status(desk, emailed) == "completed"


async def test_a_treatment_without_a_maintenance_interval_completes_without_a_reminder(
    desk: Desk,
) -> None:
    await consent(desk)
    await desk.pool.execute(
        "UPDATE treatment SET maintenance_interval_days = NULL WHERE code = 'prp-hair'"
    )
    series_id, ids = await prp_course_at_its_last_session(desk)
    assert (await desk.act(ids[3], "complete", role="clinician", json=COMPLETION)).status == 200
    assert await complete_finished_courses(desk.pool, desk.api.clock) == 1
    assert await series_status(desk, series_id) == "completed"
    assert await maintenance_rows(desk) == []
    (logged,) = await desk.audit("series.complete", series_id)
    assert logged["details"]["maintenance_interval_days"] is None


# -- gaps ---------------------------------------------------------------------------------------


async def mesotherapy_after_first_session(desk: Desk) -> tuple[int, list[int]]:
    """Hair mesotherapy (gap before session 2: target 7 days, 6-10): session 1 completed at
    08:00 London on Monday 2 March, nothing else booked."""
    return await desk.course(
        [desk.api.clock.now() - timedelta(hours=1)],
        code="hair-mesotherapy",
        statuses=["completed"],
    )


async def test_an_unbooked_next_session_past_the_soft_maximum_goes_on_the_call_list_once(
    desk: Desk,
) -> None:
    series_id, (first,) = await mesotherapy_after_first_session(desk)
    desk.api.clock.advance(timedelta(days=10))  # 10 days: the last day inside the window
    assert await file_overdue_gaps(desk.pool, desk.api.clock) == 0
    desk.api.clock.advance(timedelta(days=1))
    assert await file_overdue_gaps(desk.pool, desk.api.clock) == 1

    (task,) = await gap_calls(desk)
    assert task.appointment_id == first
    assert task.patient_id == desk.patient_id
    assert task.done_at is None
    assert task.detail.startswith(
        "Session 2 is not booked: 11 days since session 1 on 2026-03-02, past the usual "
        "maximum of 10 days (target 7)."
    )
    # 2 * 7 days after 2 March is 16 March; booked on the 17th or later it needs review.
    assert "booked on 2026-03-17 or later" in task.detail
    assert await series_status(desk, series_id) == "active"

    # Found again on every run and after staff dealt with it: filed once all the same.
    assert await file_overdue_gaps(desk.pool, desk.api.clock) == 0
    await call_tasks.mark_done(
        desk.pool, task.id, by="staff:1", outcome="left a message", now=desk.api.clock.now()
    )
    desk.api.clock.advance(timedelta(days=5))
    assert await file_overdue_gaps(desk.pool, desk.api.clock) == 0
    assert len(await gap_calls(desk)) == 1


async def test_a_booked_next_session_keeps_the_course_off_the_call_list_until_cancelled(
    desk: Desk,
) -> None:
    series_id, _ = await mesotherapy_after_first_session(desk)
    now = desk.api.clock.now()
    second = await desk.appointment(
        now + timedelta(days=20),
        code="hair-mesotherapy",
        series_id=series_id,
        position=2,
    )
    desk.api.clock.advance(timedelta(days=12))
    assert await file_overdue_gaps(desk.pool, desk.api.clock) == 0
    reply = await desk.act(second, "cancel", json={"reason": "patient is away"})
    assert reply.status == 200, reply.body
    assert await file_overdue_gaps(desk.pool, desk.api.clock) == 1


async def test_a_completed_or_cancelled_course_is_not_chased(desk: Desk) -> None:
    series_id, _ = await mesotherapy_after_first_session(desk)
    await desk.pool.execute("UPDATE series SET status = 'cancelled' WHERE id = $1", series_id)
    desk.api.clock.advance(timedelta(days=30))
    assert await file_overdue_gaps(desk.pool, desk.api.clock) == 0


async def book_next(desk: Desk, series_id: int, start: datetime) -> dict[str, Any]:
    reply = await desk.api.call(
        "POST",
        "/api/v1/bookings",
        role="front_desk",
        json={
            "patient_id": desk.patient_id,
            "treatment_id": await desk.treatment_id("hair-mesotherapy"),
            "series_id": series_id,
            "practitioner_id": HART,
            "start": iso(start),
        },
    )
    assert reply.status == 201, reply.body
    return reply.body


async def test_past_twice_the_target_the_next_session_is_booked_for_clinician_review(
    desk: Desk,
) -> None:
    series_id, _ = await mesotherapy_after_first_session(desk)
    desk.api.clock.advance(timedelta(days=13))  # Sunday 15 March: on the call list by now
    assert await file_overdue_gaps(desk.pool, desk.api.clock) == 1

    # Tuesday 17 March is 15 days after session 1: more than twice the 7-day target.
    booked = await book_next(desk, series_id, london(date(2026, 3, 17), 10))
    assert booked["needs_review"] is True
    assert any("beyond the usual maximum of 10" in w for w in booked["warnings"])
    (session,) = booked["appointments"]
    clinical = await desk.read(session["id"], role="clinician")
    assert clinical.body["needs_review"] is True
    assert any(
        "more than twice the target of 7: clinician review" in reason
        for reason in clinical.body["review_reasons"]
    )
    # It cannot be checked in until a clinician has reviewed it.
    desk.api.clock.set(london(date(2026, 3, 17), 9, 30))
    refused = await desk.act(session["id"], "check-in")
    assert refused.status == 409
    assert refused.body["type"].endswith("/needs-review")


async def test_exactly_twice_the_target_is_past_the_maximum_but_needs_no_review(
    desk: Desk,
) -> None:
    series_id, _ = await mesotherapy_after_first_session(desk)
    desk.api.clock.advance(timedelta(days=13))
    # Monday 16 March: 14 days, twice the target and no more.
    booked = await book_next(desk, series_id, london(date(2026, 3, 16), 10))
    assert booked["needs_review"] is False
    assert booked["warnings"]


# -- two replicas ---------------------------------------------------------------------------------


@pytest.fixture
async def second_pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    """Another replica's connections to the same database."""
    from shared.db.pool import create_pool

    pool = await create_pool(db_url)
    yield pool
    await pool.close()


async def test_two_replicas_over_three_weeks_complete_remind_and_call_once(
    desk: Desk, second_pool: asyncpg.Pool
) -> None:
    """Twelve patients: six finish a PRP course on different days, six have a mesotherapy course
    whose second session is never booked. Both replicas run both sweeps at the same moment,
    every simulated four hours for three weeks."""
    clock = desk.api.clock
    start = clock.now()
    finishing: list[tuple[int, int, int]] = []  # (patient, series, last session)
    waiting: list[int] = []
    for n in range(12):
        patient_id = await factories.patient(
            desk.pool,
            clinic_id=desk.api.clinic_id,
            first_name=f"P{n}",
            last_name="Replica",
            mobile=f"+4477009002{n:02d}",
            email=None,
            date_of_birth=None,
            now=start,
        )
        await consent(desk, patient_id)
        desk.patient_id = patient_id
        practitioner = await desk.new_practitioner()
        if n < 6:
            # The fourth session on day n (at 10:00), checked in: completed through the API then.
            last = start + timedelta(days=n, hours=1)
            series_id, ids = await desk.course(
                [last - timedelta(days=28 * k) for k in (3, 2, 1, 0)],
                code="prp-hair",
                statuses=["completed"] * 3 + ["checked_in"],
                practitioner_id=practitioner,
            )
            finishing.append((patient_id, series_id, ids[3]))
        else:
            # Session 1 done n days before the start with Dr Hart: proposed (and held) at
            # once while the gap window still has room, released unanswered two days later,
            # overdue on day 11 - n.
            series_id, _ = await desk.course(
                [start - timedelta(days=n)],
                code="hair-mesotherapy",
                statuses=["completed"],
                practitioner_id=HART,
            )
            waiting.append(series_id)

    sweeps = [
        complete_finished_courses,
        file_overdue_gaps,
        *(sweep.run for sweep in proposal_sweeps(timedelta(hours=48))),
    ]

    async def both_replicas() -> None:
        for sweep in sweeps:
            await asyncio.gather(sweep(desk.pool, clock), sweep(second_pool, clock))

    for _ in range(21 * 6):  # every 4 hours
        for patient_id, _, last in finishing:
            due = await desk.pool.fetchval(
                "SELECT lower(during) + interval '1 hour' <= $2 AND status = 'checked_in' "
                "FROM appointment WHERE id = $1",
                last,
                clock.now(),
            )
            if due:
                desk.patient_id = patient_id
                assert (
                    await desk.act(last, "complete", role="clinician", json=COMPLETION)
                ).status == 200
        await both_replicas()
        clock.advance(timedelta(hours=4))

    for patient_id, series_id, _ in finishing:
        assert await series_status(desk, series_id) == "completed"
        assert len(await desk.audit("series.complete", series_id)) == 1
        assert len(await maintenance_rows(desk, patient_id)) == 1
    calls = await gap_calls(desk)
    assert sorted(t.patient_id for t in calls) == sorted(
        [
            int(await desk.pool.fetchval("SELECT patient_id FROM series WHERE id = $1", s))
            for s in waiting
        ]
    )
    for series_id in waiting:
        assert await series_status(desk, series_id) == "active"
        # One proposal per completed session; each one held was released (unanswered) once,
        # with one call and one message to the patient.
        (proposal,) = await proposals.for_series(desk.pool, series_id)
        assert proposal.status in ("released", "skipped")
        if proposal.status == "skipped":
            assert proposal.note == "the gap window has passed"
        if proposal.status == "released":
            released_calls = await desk.pool.fetchval(
                "SELECT count(*) FROM call_task WHERE reason = 'proposal_unanswered' "
                "AND appointment_id = $1",
                proposal.appointment_id,
            )
            assert released_calls == 1
            told = await desk.pool.fetchval(
                "SELECT count(*) FROM notification WHERE kind = 'proposal_released' "
                "AND appointment_id = $1",
                proposal.appointment_id,
            )
            assert told == 1
    asked = await desk.pool.fetchval(
        "SELECT count(*) FROM session_proposal WHERE status = 'released'"
    )
    assert asked == 5  # all but the one whose window had closed (n = 11)
    assert (
        await desk.pool.fetchval(
            "SELECT count(*) FROM notification WHERE kind = 'session_proposal' AND channel = 'sms'"
        )
        == asked
    )


async def test_staff_booking_the_next_session_takes_the_place_of_a_held_proposal(
    desk: Desk,
) -> None:
    await consent(desk)
    series_id, _ = await mesotherapy_after_first_session(desk)
    assert await propose_next_sessions(desk.pool, desk.api.clock, hold=timedelta(hours=48)) == 1
    (proposal,) = await proposals.for_series(desk.pool, series_id)
    assert proposal.appointment_id is not None
    held = await desk.pool.fetchrow(
        "SELECT lower(during) AS starts_at, practitioner_id FROM appointment WHERE id = $1",
        proposal.appointment_id,
    )

    # The patient phoned and takes that very time: staff book it as the next session.
    reply = await desk.api.call(
        "POST",
        "/api/v1/bookings",
        role="front_desk",
        json={
            "patient_id": desk.patient_id,
            "treatment_id": await desk.treatment_id("hair-mesotherapy"),
            "series_id": series_id,
            "practitioner_id": held["practitioner_id"],
            "start": iso(held["starts_at"]),
        },
    )

    assert reply.status == 201, reply.body
    (session,) = reply.body["appointments"]
    assert session["position"] == 2  # the session after the completed one, not after the hold
    assert await desk.status(proposal.appointment_id) == "cancelled"
    (settled,) = await proposals.for_series(desk.pool, series_id)
    assert settled.status == "released"
    # Staff are arranging it: no call task, no "we released your time" message.
    assert await desk.pool.fetchval("SELECT count(*) FROM call_task") == 0
    assert (
        await desk.pool.fetchval(
            "SELECT count(*) FROM notification WHERE kind = 'proposal_released'"
        )
        == 0
    )
