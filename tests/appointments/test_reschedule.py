"""Rescheduling through the admin API: free slots and alternatives, the course's gap rules
(hard minimum with clinician override, soft maximum, twice the target), shifting later sessions
atomically, races, bad input, and a move across the daylight-saving change."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta

from shared.store import time_off
from tests.appointments.conftest import HART, PATEL, Desk, iso, london, paths

TUESDAYS = [date(2026, 3, 3) + timedelta(days=7 * k) for k in range(4)]  # 3, 10, 17, 24 March


async def weekly_course(desk: Desk, sessions: int = 4) -> tuple[int, list[int]]:
    return await desk.course([london(day) for day in TUESDAYS[:sessions]])


async def move(
    desk: Desk,
    appointment_id: int,
    start: datetime | str,
    role: str = "front_desk",
    **extra: object,
):  # type: ignore[no-untyped-def]
    body = {"starts_at": start if isinstance(start, str) else iso(start), **extra}
    return await desk.act(appointment_id, "reschedule", role=role, json=body)


async def test_a_move_inside_the_window_keeps_the_id_and_writes_history(desk: Desk) -> None:
    _, ids = await weekly_course(desk)
    reply = await move(desk, ids[1], london(date(2026, 3, 11), 11), reason="patient at work")
    assert reply.status == 200, reply.body
    body = reply.body
    assert body["appointment"]["id"] == ids[1] and body["version"] == 2
    assert reply.headers["ETag"] == '"2"'
    assert body["appointment"]["local_time"] == "11:00"
    assert body["warnings"] == [] and body["proposed_shifts"] == []
    assert [g["days"] for g in body["gaps"]] == [8, 6]
    event = body["appointment"]["history"][-1]
    assert event["from_status"] == event["to_status"] == "booked"
    assert event["reason"] == "patient at work"
    assert event["details"]["moved"]["from"]["starts_at"] == "2026-03-10T10:00:00+00:00"
    logged = await desk.audit("appointment.reschedule", ids[1])
    assert logged[0]["details"]["to"]["starts_at"] == "2026-03-11T11:00:00+00:00"


async def test_below_the_hard_minimum_is_refused_then_overridden_by_a_clinician(
    desk: Desk,
) -> None:
    _, ids = await weekly_course(desk, sessions=2)
    friday = london(date(2026, 3, 6))  # 3 days after session 1; the minimum is 6
    refused = await move(desk, ids[1], friday)
    assert refused.status == 409 and refused.body["type"].endswith("/gap-below-minimum")
    assert "below the hard minimum of 6 days" in refused.body["detail"]
    assert refused.body["gaps"][0]["problems"] == ["below_minimum"]
    assert refused.body["gaps"][0]["days"] == 3

    by_desk = await move(desk, ids[1], friday, override_reason="patient travelling")
    assert by_desk.status == 403 and by_desk.body["type"].endswith("/override-not-allowed")
    assert await desk.start(ids[1]) == london(TUESDAYS[1])

    allowed = await move(
        desk, ids[1], friday, role="clinician", override_reason="travelling; scalp healed well"
    )
    assert allowed.status == 200, allowed.body
    assert allowed.body["overridden"] and "hard minimum" in allowed.body["overridden"][0]
    event = allowed.body["appointment"]["history"][-1]
    assert event["details"]["gap_override"]["reason"] == "travelling; scalp healed well"
    logged = await desk.audit("appointment.reschedule", ids[1])
    assert logged[0]["reason"] == "travelling; scalp healed well"
    assert logged[0]["details"]["gap_override"]["breaches"] == allowed.body["overridden"]


async def test_past_the_soft_maximum_is_allowed_with_a_warning(desk: Desk) -> None:
    _, ids = await weekly_course(desk, sessions=2)
    reply = await move(desk, ids[1], london(date(2026, 3, 16)))  # 13 days; maximum 10
    assert reply.status == 200, reply.body
    assert len(reply.body["warnings"]) == 1
    assert "past the soft maximum of 10 days" in reply.body["warnings"][0]
    assert reply.body["review_notes"] == [] and reply.body["flagged_for_review"] == []


async def test_beyond_twice_the_target_flags_the_session_for_clinician_review(desk: Desk) -> None:
    _, ids = await weekly_course(desk, sessions=2)
    reply = await move(desk, ids[1], london(date(2026, 3, 19)))  # 16 days; twice the target: 14
    assert reply.status == 200, reply.body
    assert reply.body["review_notes"] and reply.body["flagged_for_review"] == [ids[1]]
    assert reply.body["appointment"]["needs_review"] is True
    desk.api.clock.set(london(date(2026, 3, 19), 9, 50))
    refused = await desk.act(ids[1], "check-in")
    assert refused.status == 409 and refused.body["type"].endswith("/needs-review")


async def test_later_sessions_are_proposed_then_shifted_in_one_transaction(desk: Desk) -> None:
    _, ids = await weekly_course(desk)
    friday = london(date(2026, 3, 13))  # session 3 on 17 March would be 4 days later
    proposal = await move(desk, ids[1], friday)
    assert proposal.status == 409 and proposal.body["type"].endswith("/gap-below-minimum")
    assert "shift_later" in proposal.body["detail"]
    proposed = {s["appointment_id"]: s for s in proposal.body["proposed_shifts"]}
    assert proposed[ids[2]]["to_starts_at"] == "2026-03-20T10:00:00Z"
    assert proposed[ids[3]]["to_starts_at"] == "2026-03-27T10:00:00Z"
    assert [await desk.version(i) for i in ids] == [1, 1, 1, 1]

    applied = await move(desk, ids[1], friday, shift_later=True)
    assert applied.status == 200, applied.body
    assert [s["appointment_id"] for s in applied.body["applied_shifts"]] == ids[2:]
    assert applied.body["proposed_shifts"] == [] and applied.body["warnings"] == []
    assert [await desk.start(i) for i in ids] == [
        london(date(2026, 3, 3)),
        friday,
        london(date(2026, 3, 20)),
        london(date(2026, 3, 27)),
    ]
    assert [await desk.version(i) for i in ids] == [1, 2, 2, 2]
    shifted = await desk.audit("appointment.shift")
    assert [row["entity_id"] for row in shifted] == ids[2:]
    assert shifted[0]["details"]["cause_appointment_id"] == ids[1]


async def test_a_shift_that_cannot_be_placed_moves_nothing(desk: Desk) -> None:
    _, ids = await weekly_course(desk)
    for practitioner_id in (HART, PATEL):  # nobody works 19-23 March
        start = london(date(2026, 3, 19), 0)
        await time_off.insert(
            desk.pool,
            practitioner_id,
            starts_at=start,
            ends_at=london(date(2026, 3, 24), 0),
            reason="",
            now=start,
        )
    reply = await move(desk, ids[1], london(date(2026, 3, 13)), shift_later=True)
    assert reply.status == 409 and reply.body["type"].endswith("/shift-impossible")
    assert "no free slot between 2026-03-19 and 2026-03-23" in reply.body["detail"]
    assert await desk.start(ids[1]) == london(TUESDAYS[1])
    assert [await desk.version(i) for i in ids] == [1, 1, 1, 1]
    assert await desk.audit("appointment.reschedule") == []


async def test_a_longer_gap_after_is_a_warning_with_proposed_shifts(desk: Desk) -> None:
    starts = [london(date(2026, 3, 3)), london(date(2026, 3, 10)), london(date(2026, 3, 20))]
    _, ids = await desk.course(starts)
    reply = await move(desk, ids[1], london(date(2026, 3, 9)))  # session 3 now 11 days after
    assert reply.status == 200, reply.body
    assert "past the soft maximum" in reply.body["warnings"][0]
    assert [s["appointment_id"] for s in reply.body["proposed_shifts"]] == [ids[2]]
    assert reply.body["proposed_shifts"][0]["to_starts_at"] == "2026-03-16T10:00:00Z"
    assert await desk.start(ids[2]) == starts[2]  # proposed, not applied


async def test_a_taken_or_closed_slot_is_409_with_alternatives(desk: Desk) -> None:
    appointment_id = await desk.appointment(london(date(2026, 3, 4), 10))
    await desk.appointment(london(date(2026, 3, 5), 11), patient_id=await desk.new_patient())
    taken = await move(desk, appointment_id, london(date(2026, 3, 5), 11))
    assert taken.status == 409 and taken.body["type"].endswith("/slot-unavailable")
    assert "overlaps another booking" in taken.body["detail"]
    # The same rule as every conflict: a few with the same practitioner first, then anyone.
    alternatives = taken.body["alternatives"]
    practitioners = [a["practitioner_id"] for a in alternatives]
    assert practitioners[:3] == [HART] * 3 and len(alternatives) == 6
    starts = [a["starts_at"] for a in alternatives]
    assert "2026-03-05T11:00:00Z" not in starts[:3] and starts == sorted(starts[:3]) + starts[3:]
    lunch = await move(desk, appointment_id, london(date(2026, 3, 5), 13, 15))
    assert lunch.status == 409 and "outside practitioner 1's working hours" in lunch.body["detail"]
    off_grid = await move(desk, appointment_id, london(date(2026, 3, 5), 10, 7))
    assert off_grid.status == 409 and "slot grid" in off_grid.body["detail"]
    same = await move(desk, appointment_id, london(date(2026, 3, 4), 10))
    assert same.status == 422 and paths(same) == {"starts_at"}


async def test_two_moves_into_one_slot_at_once_one_wins(desk: Desk) -> None:
    first = await desk.appointment(london(date(2026, 3, 4), 10))
    second = await desk.appointment(
        london(date(2026, 3, 4), 11), patient_id=await desk.new_patient()
    )
    target = london(date(2026, 3, 6), 15)
    replies = await asyncio.gather(move(desk, first, target), move(desk, second, target))
    assert sorted(r.status for r in replies) == [200, 409]
    loser = next(r for r in replies if r.status == 409)
    assert loser.body["alternatives"]
    overlaps = await desk.pool.fetchval(
        """SELECT count(*) FROM appointment a JOIN appointment b ON a.id < b.id
           AND a.practitioner_id = b.practitioner_id AND a.blocked && b.blocked"""
    )
    assert overlaps == 0


async def test_another_practitioner_and_unknown_ones(desk: Desk) -> None:
    appointment_id = await desk.appointment(london(date(2026, 3, 4), 10))
    saturday = london(date(2026, 3, 7), 10)  # Dr Patel works Saturdays, Dr Hart does not
    assert (await move(desk, appointment_id, saturday)).status == 409
    moved = await move(desk, appointment_id, saturday, practitioner_id=PATEL)
    assert moved.status == 200 and moved.body["appointment"]["practitioner_id"] == PATEL
    unknown = await move(desk, appointment_id, saturday, practitioner_id=999)
    assert unknown.status == 422 and paths(unknown) == {"practitioner_id"}


async def test_only_booked_or_confirmed_appointments_move(desk: Desk) -> None:
    done = await desk.appointment(london(date(2026, 2, 27)), status="completed")
    reply = await move(desk, done, london(date(2026, 3, 4)))
    assert reply.status == 409 and reply.body["current_status"] == "completed"


async def test_bad_input_is_422_naming_the_field(desk: Desk) -> None:
    appointment_id = await desk.appointment(london(date(2026, 3, 4), 10))
    cases = {
        "starts_at": {"starts_at": "2026-03-05T10:00:00"},  # no offset
        "practitioner_id": {"starts_at": "2026-03-05T10:00:00Z", "practitioner_id": 0},
        "override_reason": {"starts_at": "2026-03-05T10:00:00Z", "override_reason": "a\u0000b"},
        "shift_later": {"starts_at": "2026-03-05T10:00:00Z", "shift_later": "maybe"},
        "colour": {"starts_at": "2026-03-05T10:00:00Z", "colour": "blue"},
    }
    # JSON types are strict: no 0 for false, no "2" for 2, no epoch seconds for a date-time.
    strict = [
        ("shift_later", {"starts_at": "2026-03-05T10:00:00Z", "shift_later": 0}),
        ("practitioner_id", {"starts_at": "2026-03-05T10:00:00Z", "practitioner_id": "2"}),
        ("starts_at", {"starts_at": 1772704800}),
    ]
    for field, body in strict:
        reply = await desk.act(appointment_id, "reschedule", json=body)
        assert reply.status == 422 and paths(reply) == {field}, (field, reply.body)
    for field, body in cases.items():
        reply = await desk.act(appointment_id, "reschedule", json=body)
        assert reply.status == 422, (field, reply.body)
        assert paths(reply) == {field}, (field, reply.body)
    far = await move(desk, appointment_id, "0001-01-01T00:00:00Z")
    assert far.status == 422 and paths(far) == {"starts_at"}
    huge = await move(desk, appointment_id, "2026-03-05T10:00:00Z", practitioner_id=2**70)
    assert huge.status == 422 and paths(huge) == {"practitioner_id"}
    raw = await desk.api.call(
        "POST",
        f"/api/v1/appointments/{appointment_id}/reschedule",
        role="front_desk",
        headers={"If-Match": '"1"', "Content-Type": "application/json"},
    )
    assert raw.status == 400


async def test_a_session_moved_across_the_clock_change_keeps_its_local_time(desk: Desk) -> None:
    # Tuesdays 17, 24 and 31 March at 10:00; the clocks go forward on Sunday 29 March.
    starts = [london(date(2026, 3, 17)), london(date(2026, 3, 24)), london(date(2026, 3, 31))]
    _, ids = await desk.course(starts)
    friday = london(date(2026, 3, 27))
    reply = await move(desk, ids[1], friday, shift_later=True)
    assert reply.status == 200, reply.body
    shifted = reply.body["applied_shifts"][0]
    assert shifted["to_starts_at"] == "2026-04-03T09:00:00Z"  # 10:00 BST
    assert shifted["to_starts_local"] == "2026-04-03T10:00:00+01:00"
    assert shifted["gap_days"] == 7

    week = await desk.api.call(
        "GET",
        f"/api/v1/practitioners/{HART}/schedule",
        role="front_desk",
        params={"date": "2026-04-01", "view": "week"},
    )
    assert week.status == 200, week.body
    friday_after = next(d for d in week.body["days"] if d["local_date"] == "2026-04-03")
    assert [(a["id"], a["local_time"]) for a in friday_after["appointments"]] == [(ids[2], "10:00")]

    # And a single appointment moved from GMT to BST shows at 10:00 on its new day.
    single = await desk.appointment(london(date(2026, 3, 27), 11))
    moved = await move(desk, single, "2026-03-30T10:00:00+01:00")
    assert moved.status == 200, moved.body
    day = await desk.api.call(
        "GET",
        f"/api/v1/practitioners/{HART}/schedule",
        role="front_desk",
        params={"date": "2026-03-30"},
    )
    items = day.body["days"][0]["appointments"]
    assert [(a["id"], a["local_time"], a["starts_at"]) for a in items] == [
        (single, "10:00", "2026-03-30T09:00:00Z")
    ]
