"""Holds (time left, release, expiry by the clock and the sweep, re-taking a lapsed hold) and
staff bookings (single visit, course, session by session, gap rules and overrides)."""

from __future__ import annotations

from datetime import timedelta

from services.scheduler.holds import expire_holds
from tests.booking.conftest import Demo, overlapping_active_pairs, sessions_of

SLOT = "2026-03-03T10:00:00Z"
ONE = [{"practitioner_id": 1, "start": SLOT}]


async def _hold_state(demo: Demo, token: str) -> dict:
    reply = await demo.call("GET", "/api/v1/public/hold", headers={"Hold-Token": token})
    assert reply.status == 200, reply.body
    return reply.body


async def test_hold_counts_down_and_expires_with_the_clock(demo: Demo) -> None:
    hold = await demo.hold(demo.consultation, ONE)
    assert hold.status == 201
    token = hold.body["token"]
    demo.api.clock.advance(timedelta(minutes=4))
    assert (await _hold_state(demo, token))["seconds_left"] == 360
    demo.api.clock.advance(timedelta(minutes=6, seconds=1))
    state = await _hold_state(demo, token)
    assert state["state"] == "expired" and state["seconds_left"] == 0
    # Free again for everyone at once, before any sweep.
    assert SLOT in await demo.free_starts(demo.consultation, "1", "2026-03-03")
    assert await expire_holds(demo.pool, demo.api.clock) == 1
    assert await expire_holds(demo.pool, demo.api.clock) == 0
    row = await demo.pool.fetchrow("SELECT status, cancelled_reason FROM appointment")
    assert (row["status"], row["cancelled_reason"]) == ("cancelled", "hold expired")
    audit = await demo.pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'hold.expire'")
    assert audit == 1


async def test_booking_an_expired_hold_whose_slot_was_taken_is_409_with_alternatives(
    demo: Demo,
) -> None:
    hold = await demo.hold(demo.consultation, ONE)
    demo.api.clock.advance(timedelta(minutes=11))
    # Someone else takes the slot; their booking clears the expired hold out of the way itself.
    other = await demo.hold(demo.consultation, ONE)
    assert other.status == 201, other.body
    late = await demo.book(hold.body["token"])
    assert late.status == 409, late.body
    assert late.body["type"].endswith("hold-expired")
    assert late.body["conflicts"][0]["position"] == 1
    alternatives = late.body["alternatives"]
    assert alternatives and alternatives[0]["practitioner_id"] == 1
    assert alternatives[0]["start"] > SLOT
    assert {a["practitioner_id"] for a in alternatives} == {1, 2}  # same one first, then any
    assert await demo.pool.fetchval("SELECT count(*) FROM patient") == 0
    assert await overlapping_active_pairs(demo.pool) == 0


async def test_an_expired_and_swept_hold_is_retaken_when_still_free(demo: Demo) -> None:
    proposal = await demo.propose(demo.mesotherapy, SLOT)
    hold = await demo.hold(demo.mesotherapy, sessions_of(proposal.body))
    demo.api.clock.advance(timedelta(minutes=15))
    assert await expire_holds(demo.pool, demo.api.clock) == 8
    booked = await demo.book(hold.body["token"])
    assert booked.status == 201, booked.body
    assert len(booked.body["appointments"]) == 8
    counts = dict(await demo.pool.fetch("SELECT status, count(*) FROM appointment GROUP BY 1"))
    assert counts == {"cancelled": 8, "booked": 8}
    assert await overlapping_active_pairs(demo.pool) == 0
    assert (await _hold_state(demo, hold.body["token"]))["state"] == "booked"


async def test_an_expired_unswept_hold_is_retaken_too(demo: Demo) -> None:
    hold = await demo.hold(demo.consultation, ONE)
    demo.api.clock.advance(timedelta(minutes=11))
    booked = await demo.book(hold.body["token"])
    assert booked.status == 201, booked.body
    statuses = [r["status"] for r in await demo.pool.fetch("SELECT status FROM appointment")]
    assert sorted(statuses) == ["booked", "cancelled"]


async def test_release_frees_the_time_and_the_token_cannot_book(demo: Demo) -> None:
    hold = await demo.hold(demo.consultation, ONE)
    token = hold.body["token"]
    assert SLOT not in await demo.free_starts(demo.consultation, "1", "2026-03-03")
    released = await demo.call("DELETE", "/api/v1/public/hold", headers={"Hold-Token": token})
    assert released.status == 204
    assert SLOT in await demo.free_starts(demo.consultation, "1", "2026-03-03")
    assert (await _hold_state(demo, token))["state"] == "released"
    again = await demo.call("DELETE", "/api/v1/public/hold", headers={"Hold-Token": token})
    assert again.status == 204
    late = await demo.book(token)
    assert late.status == 409 and late.body["type"].endswith("hold-released")
    assert late.body["alternatives"]


async def test_a_hold_books_once_and_unknown_tokens_are_404(demo: Demo) -> None:
    hold = await demo.hold(demo.consultation, ONE)
    token = hold.body["token"]
    assert (await demo.book(token)).status == 201
    twice = await demo.book(token)
    assert twice.status == 409 and twice.body["type"].endswith("hold-booked")
    gone = await demo.call("DELETE", "/api/v1/public/hold", headers={"Hold-Token": token})
    assert gone.status == 409
    unknown = "hold_" + "A" * 43
    assert (await demo.book(unknown)).status == 404
    assert (
        await demo.call("GET", "/api/v1/public/hold", headers={"Hold-Token": unknown})
    ).status == 404


async def test_min_notice_and_horizon_are_honoured(demo: Demo) -> None:
    soon = await demo.hold(
        demo.consultation, [{"practitioner_id": 1, "start": "2026-03-02T10:00Z"}]
    )
    assert soon.status == 409 and "minimum notice" in soon.body["conflicts"][0]["reason"]
    assert soon.body["alternatives"][0]["start"] == "2026-03-02T11:00:00Z"
    far = await demo.hold(demo.consultation, [{"practitioner_id": 1, "start": "2026-12-01T10:00Z"}])
    assert far.status == 409 and "horizon" in far.body["conflicts"][0]["reason"]


# -- staff bookings ------------------------------------------------------------------------------


async def _staff(demo: Demo, role: str = "front_desk", **body: object) -> object:
    return await demo.call("POST", "/api/v1/bookings", role=role, json=body)


async def test_staff_book_a_single_visit_and_a_whole_course(demo: Demo) -> None:
    patient = await demo.patient()
    single = await _staff(
        demo, patient_id=patient, treatment_id=demo.consultation, practitioner_id=2, start=SLOT
    )
    assert single.status == 201, single.body
    assert single.body["series_id"] is None and single.body["patient_id"] == patient
    course = await _staff(
        demo,
        role="clinician",
        patient_id=patient,
        treatment_id=demo.mesotherapy,
        practitioner_id=1,
        start=SLOT,
    )
    assert course.status == 201, course.body
    assert len(course.body["appointments"]) == 8 and course.body["series_id"]
    assert {a["status"] for a in course.body["appointments"]} == {"booked"}
    sources = {r["source"] for r in await demo.pool.fetch("SELECT source FROM appointment")}
    assert sources == {"staff"}
    audit = await demo.pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'booking.create' AND actor_kind = 'staff'"
    )
    assert audit == 2


async def test_staff_conflict_lists_the_position_and_alternatives(demo: Demo) -> None:
    first, second = await demo.patient("One"), await demo.patient("Two")
    ok = await _staff(
        demo, patient_id=first, treatment_id=demo.consultation, practitioner_id=1, start=SLOT
    )
    assert ok.status == 201
    taken = await _staff(
        demo, patient_id=second, treatment_id=demo.consultation, practitioner_id=1, start=SLOT
    )
    assert taken.status == 409, taken.body
    assert taken.body["conflicts"][0]["position"] == 1
    assert "overlaps another booking" in taken.body["conflicts"][0]["reason"]
    same = [a for a in taken.body["alternatives"] if a["practitioner_id"] == 1]
    assert same and same[0]["start"] == "2026-03-03T10:30:00Z"
    assert taken.body["alternatives"][: len(same)] == same  # the same practitioner first


async def test_session_by_session_booking_and_gap_rules(demo: Demo) -> None:
    patient = await demo.patient()
    first = await _staff(
        demo,
        patient_id=patient,
        treatment_id=demo.mesotherapy,
        sessions=[{"practitioner_id": 1, "start": SLOT}],
    )
    assert first.status == 201, first.body
    series_id = first.body["series_id"]
    planned = await demo.pool.fetchval("SELECT planned_sessions FROM series")
    assert planned == 8
    # Four days later (a Saturday, with practitioner 2) is under the hard minimum of six.
    early = {
        "patient_id": patient,
        "treatment_id": demo.mesotherapy,
        "series_id": series_id,
        "practitioner_id": 2,
        "start": "2026-03-07T10:00:00Z",
    }
    refused = await _staff(demo, **early)
    assert refused.status == 422 and refused.body["errors"][0]["path"] == "start"
    reason = "patient travels; clinician agreed"
    assert (await _staff(demo, **early, override_reason=reason)).status == 403
    allowed = await _staff(demo, role="clinician", **early, override_reason=reason)
    assert allowed.status == 201, allowed.body
    assert allowed.body["appointments"][0]["position"] == 2
    assert "under the minimum" in allowed.body["warnings"][0]
    logged = await demo.pool.fetchval(
        "SELECT reason FROM audit_log WHERE action = 'booking.create' ORDER BY id DESC LIMIT 1"
    )
    assert logged == reason
    # Beyond the soft maximum (10 days) only warns; beyond twice the target flags a review.
    late = await _staff(
        demo,
        patient_id=patient,
        treatment_id=demo.mesotherapy,
        series_id=series_id,
        practitioner_id=1,
        start="2026-03-24T10:00:00Z",
    )
    assert late.status == 201, late.body
    assert late.body["appointments"][0]["position"] == 3
    assert "beyond the usual maximum" in late.body["warnings"][0]
    assert late.body["needs_review"] is True


async def test_staff_booking_validation(demo: Demo) -> None:
    patient = await demo.patient()
    base = {"patient_id": patient, "treatment_id": demo.consultation}
    cases = [
        ({**base, "start": SLOT}, "practitioner_id"),
        ({**base}, "start"),
        ({**base, "start": SLOT, "practitioner_id": 1, "sessions": ONE}, "sessions"),
        ({**base, "patient_id": 424242, "start": SLOT, "practitioner_id": 1}, "patient_id"),
        ({**base, "treatment_id": 424242, "start": SLOT, "practitioner_id": 1}, "treatment_id"),
        ({**base, "sessions": ONE * 2}, "sessions"),
        ({**base, "sessions": ONE, "series_id": 5}, "series_id"),
        ({**base, "sessions": [{"practitioner_id": 1, "start": "2026-03-03"}]}, "sessions.0.start"),
    ]
    for body, path in cases:
        reply = await demo.call("POST", "/api/v1/bookings", role="admin", json=body)
        assert reply.status == 422, (body, reply.body)
        assert reply.body["errors"][0]["path"] == path, (body, reply.body)
    assert (await demo.call("POST", "/api/v1/bookings", json={**base})).status == 401
