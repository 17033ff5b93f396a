"""State actions on appointments through the admin API: each allowed and refused by state, the
time windows, If-Match (428 / 412, two screens racing), the audit trail."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

from tests.appointments.conftest import PATEL, Desk, london, paths

TUESDAY = date(2026, 3, 3)  # the day after the frozen clock's Monday


async def test_confirm_on_the_patients_behalf_then_not_twice(desk: Desk) -> None:
    appointment_id = await desk.appointment(london(TUESDAY))
    seen = await desk.read(appointment_id)
    assert seen.headers["ETag"] == '"1"' and seen.body["status"] == "booked"

    reply = await desk.act(appointment_id, "confirm", version=1)
    assert reply.status == 200, reply.body
    assert reply.body["status"] == "confirmed" and reply.body["version"] == 2
    assert reply.headers["ETag"] == '"2"'
    last = reply.body["history"][-1]
    assert (last["from_status"], last["to_status"]) == ("booked", "confirmed")
    assert last["actor"].startswith("staff:") and last["details"] == {"on_behalf_of": "patient"}
    logged = await desk.audit("appointment.confirm", appointment_id)
    assert len(logged) == 1 and logged[0]["patient_id"] == desk.patient_id
    assert logged[0]["actor_name"] == "test front_desk (front_desk)"

    again = await desk.act(appointment_id, "confirm")
    assert again.status == 409
    assert again.body["type"].endswith("/illegal-transition")
    assert again.body["current_status"] == "confirmed"


async def test_if_match_is_required_and_must_be_current(desk: Desk) -> None:
    appointment_id = await desk.appointment(london(TUESDAY))
    path = f"/api/v1/appointments/{appointment_id}/confirm"
    missing = await desk.api.call("POST", path, role="front_desk")
    assert missing.status == 428 and missing.body["type"].endswith("/if-match-required")
    garbage = await desk.act(appointment_id, "confirm", if_match="yesterday")
    assert garbage.status == 412
    stale = await desk.act(appointment_id, "confirm", version=7)
    assert stale.status == 412 and stale.body["current_version"] == 1
    assert stale.headers["ETag"] == '"1"'
    assert await desk.status(appointment_id) == "booked"
    assert await desk.audit("appointment.confirm") == []


async def test_two_front_desk_screens_racing_first_wins_second_gets_412(desk: Desk) -> None:
    appointment_id = await desk.appointment(london(TUESDAY))
    screen_a = await desk.read(appointment_id)
    screen_b = await desk.read(appointment_id)
    version = screen_a.body["version"]
    assert screen_b.body["version"] == version
    first = await desk.act(appointment_id, "confirm", version=version)
    second = await desk.act(
        appointment_id, "cancel", version=version, json={"reason": "patient phoned"}
    )
    assert first.status == 200
    assert second.status == 412 and second.body["current_version"] == version + 1
    assert await desk.status(appointment_id) == "confirmed"


async def test_truly_concurrent_actions_on_one_version_let_exactly_one_through(desk: Desk) -> None:
    appointment_id = await desk.appointment(london(TUESDAY))
    replies = await asyncio.gather(
        *(desk.act(appointment_id, "confirm", version=1) for _ in range(6))
    )
    assert sorted(r.status for r in replies) == [200, 412, 412, 412, 412, 412]
    assert len(await desk.audit("appointment.confirm", appointment_id)) == 1


async def test_check_in_window_from_two_hours_before_to_end_plus_grace(desk: Desk) -> None:
    start = london(TUESDAY, 10)
    appointment_id = await desk.appointment(start)  # 30 min; the demo grace is 30 min
    desk.api.clock.set(start - timedelta(hours=2, minutes=1))
    early = await desk.act(appointment_id, "check-in")
    assert early.status == 409 and early.body["type"].endswith("/check-in-not-open")
    assert "2026-03-03 08:00" in early.body["detail"]
    desk.api.clock.set(start - timedelta(hours=2))
    assert (await desk.act(appointment_id, "check-in")).status == 200

    late_id = await desk.appointment(london(TUESDAY, 11))
    desk.api.clock.set(london(TUESDAY, 12, 1))  # ends 11:30, grace until 12:00
    late = await desk.act(late_id, "check-in")
    assert late.status == 409 and late.body["type"].endswith("/check-in-closed")
    desk.api.clock.set(london(TUESDAY, 12, 0))
    assert (await desk.act(late_id, "check-in")).status == 200


async def test_check_in_waits_for_clinician_review(desk: Desk) -> None:
    start = london(TUESDAY, 10)
    appointment_id = await desk.appointment(
        start, needs_review=True, review_reasons=["screening: takes blood thinners"]
    )
    desk.api.clock.set(start - timedelta(minutes=10))
    refused = await desk.act(appointment_id, "check-in")
    assert refused.status == 409 and refused.body["type"].endswith("/needs-review")
    # The desk learns that a review is pending, not the screening answer behind it.
    assert "review_reasons" not in refused.body and "blood" not in str(refused.body)
    by_admin = await desk.act(appointment_id, "check-in", role="admin")
    assert by_admin.status == 409
    assert by_admin.body["review_reasons"] == ["screening: takes blood thinners"]

    by_desk = await desk.act(appointment_id, "review", json={"note": "fine"})
    assert by_desk.status == 403
    reviewed = await desk.act(
        appointment_id, "review", role="clinician", json={"note": "stopped aspirin a week ago"}
    )
    assert reviewed.status == 200, reviewed.body
    assert reviewed.body["needs_review"] is False and reviewed.body["review_reasons"] == []
    event = reviewed.body["history"][-1]
    assert event["reason"] == "stopped aspirin a week ago"
    assert event["details"]["previous_reasons"] == ["screening: takes blood thinners"]
    logged = await desk.audit("appointment.review", appointment_id)
    assert logged[0]["reason"] == "stopped aspirin a week ago"

    nothing = await desk.act(appointment_id, "review", role="clinician", json={"note": "again"})
    assert nothing.status == 409 and nothing.body["type"].endswith("/nothing-to-review")
    assert (await desk.act(appointment_id, "check-in")).status == 200


async def test_complete_only_after_check_in_and_only_by_clinical_roles(desk: Desk) -> None:
    start = london(TUESDAY, 10)
    appointment_id = await desk.appointment(start)
    desk.api.clock.set(start)
    not_in = await desk.act(appointment_id, "complete", role="clinician")
    assert not_in.status == 409 and not_in.body["current_status"] == "booked"
    assert (await desk.act(appointment_id, "check-in")).status == 200
    assert (await desk.act(appointment_id, "complete")).status == 403  # front desk
    done = await desk.act(appointment_id, "complete", role="clinician")
    assert done.status == 200 and done.body["status"] == "completed"
    for action in ("check-in", "no-show", "confirm"):
        reply = await desk.act(appointment_id, action, role="admin")
        assert reply.status == 409 and reply.body["current_status"] == "completed", action
    review = await desk.act(appointment_id, "review", role="admin", json={"note": "x"})
    assert review.status == 409 and review.body["current_status"] == "completed"


async def test_no_show_only_after_end_plus_grace(desk: Desk) -> None:
    start = london(TUESDAY, 10)
    appointment_id = await desk.appointment(start)
    assert (await desk.act(appointment_id, "confirm")).status == 200
    desk.api.clock.set(start + timedelta(minutes=59))
    early = await desk.act(appointment_id, "no-show")
    assert early.status == 409 and early.body["type"].endswith("/too-early-for-no-show")
    assert "2026-03-03 11:00" in early.body["detail"]
    desk.api.clock.set(start + timedelta(hours=1))
    marked = await desk.act(appointment_id, "no-show")
    assert marked.status == 200 and marked.body["status"] == "no_show"
    again = await desk.act(appointment_id, "no-show")
    assert again.status == 409 and again.body["current_status"] == "no_show"


async def test_cancel_outside_the_notice_needs_no_override(desk: Desk) -> None:
    appointment_id = await desk.appointment(london(date(2026, 3, 4)))  # 2 days ahead
    reply = await desk.act(appointment_id, "cancel", json={"reason": "patient has flu"})
    assert reply.status == 200, reply.body
    assert reply.body["cancelled_appointment_ids"] == [appointment_id]
    assert reply.body["override_used"] is False
    assert reply.body["appointment"]["cancelled_reason"] == "patient has flu"
    assert reply.headers["ETag"] == '"2"'
    again = await desk.act(appointment_id, "cancel", json={"reason": "again"})
    assert again.status == 409 and again.body["current_status"] == "cancelled"


async def test_cancel_inside_the_notice_needs_a_logged_override(desk: Desk) -> None:
    appointment_id = await desk.appointment(london(TUESDAY, 10))
    desk.api.clock.set(london(TUESDAY, 10) - timedelta(hours=23))  # the notice is 24 h
    refused = await desk.act(appointment_id, "cancel", json={"reason": "car broke down"})
    assert refused.status == 409
    assert refused.body["type"].endswith("/inside-cancellation-notice")
    assert refused.body["notice_hours"] == 24 and refused.body["appointment_ids"] == [
        appointment_id
    ]

    half = await desk.act(
        appointment_id, "cancel", json={"reason": "car broke down", "override": True}
    )
    assert half.status == 422 and paths(half) == {"override_reason"}
    no_flag = await desk.act(
        appointment_id, "cancel", json={"reason": "x", "override_reason": "manager agreed"}
    )
    assert no_flag.status == 422 and paths(no_flag) == {"override"}

    done = await desk.act(
        appointment_id,
        "cancel",
        json={"reason": "car broke down", "override": True, "override_reason": "regular, no fee"},
    )
    assert done.status == 200 and done.body["override_used"] is True
    event = done.body["appointment"]["history"][-1]
    assert event["details"]["notice_override"] == "regular, no fee"
    logged = await desk.audit("appointment.cancel", appointment_id)
    assert logged[0]["reason"] == "car broke down"
    assert logged[0]["details"]["notice_override"] == "regular, no fee"


async def test_cancel_the_rest_of_a_course(desk: Desk) -> None:
    first = date(2026, 2, 26)
    starts = [london(first + timedelta(days=7 * k)) for k in range(4)]
    series_id, ids = await desk.course(starts, statuses=["completed", "booked", "booked", "booked"])
    other = await desk.appointment(london(date(2026, 3, 20)))  # not in the course
    reply = await desk.act(
        ids[1], "cancel", json={"reason": "moving abroad", "scope": "rest_of_course"}
    )
    assert reply.status == 200, reply.body
    assert reply.body["cancelled_appointment_ids"] == ids[1:]
    assert reply.body["series_status"] == "cancelled"
    assert [await desk.status(i) for i in ids] == ["completed", *["cancelled"] * 3]
    assert await desk.status(other) == "booked"
    assert len(await desk.audit("appointment.cancel")) == 3
    assert (await desk.audit("series.cancel", series_id))[0]["reason"] == "moving abroad"

    single = await desk.act(other, "cancel", json={"reason": "x", "scope": "rest_of_course"})
    assert single.status == 422 and paths(single) == {"scope"}


async def test_rest_of_course_inside_the_notice_names_the_late_sessions(desk: Desk) -> None:
    starts = [london(TUESDAY, 9, 30), london(date(2026, 3, 10), 9, 30)]
    _, ids = await desk.course(starts)
    desk.api.clock.set(london(TUESDAY, 9))
    refused = await desk.act(ids[0], "cancel", json={"reason": "x", "scope": "rest_of_course"})
    assert refused.status == 409 and refused.body["appointment_ids"] == [ids[0]]
    assert [await desk.status(i) for i in ids] == ["booked", "booked"]


async def test_unknown_and_malformed_ids_are_404(desk: Desk) -> None:
    for path in (
        "/api/v1/appointments/999999",
        "/api/v1/appointments/abc",
        "/api/v1/appointments/0",
        "/api/v1/appointments/99999999999999999999",
    ):
        reply = await desk.api.call("GET", path, role="admin")
        assert reply.status == 404, path
    missing = await desk.act(999999, "confirm", version=1)
    assert missing.status == 404


async def test_reading_an_appointment_is_audited_with_its_history(desk: Desk) -> None:
    appointment_id = await desk.appointment(london(TUESDAY), practitioner_id=PATEL)
    reply = await desk.read(appointment_id, role="clinician")
    body = reply.body
    assert body["practitioner_id"] == PATEL and body["time_zone"] == "Europe/London"
    assert body["local_time"] == "10:00" and body["starts_local"] == "2026-03-03T10:00:00Z"
    assert [e["to_status"] for e in body["history"]] == ["booked"]
    logged = await desk.audit("appointment.read", appointment_id)
    assert len(logged) == 1 and logged[0]["patient_id"] == desk.patient_id
    assert logged[0]["details"] == {"via": "detail", "appointment_ids": [appointment_id]}
