"""Who may do what (401 without a token, 403 for the wrong role on every endpoint), and the
no-show sweep."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from services.scheduler.no_shows import mark_no_shows
from tests.appointments.conftest import Desk, london

APPOINTMENT = "/api/v1/appointments/{id}"
ENDPOINTS = [
    ("GET", "/api/v1/appointments", None),
    ("GET", "/api/v1/practitioners/1/schedule?date=2026-03-03", None),
    ("GET", APPOINTMENT, None),
    ("POST", APPOINTMENT + "/confirm", None),
    ("POST", APPOINTMENT + "/check-in", None),
    ("POST", APPOINTMENT + "/complete", None),
    ("POST", APPOINTMENT + "/no-show", None),
    ("POST", APPOINTMENT + "/review", {"note": "ok"}),
    ("POST", APPOINTMENT + "/cancel", {"reason": "r"}),
    ("POST", APPOINTMENT + "/reschedule", {"starts_at": "2026-03-04T10:00:00Z"}),
    ("GET", "/api/v1/series", None),
    ("GET", "/api/v1/series/{series}", None),
    ("PATCH", "/api/v1/series/{series}", {"status": "paused"}),
]
# The role matrix of the module docstrings: everything not listed here is allowed.
FORBIDDEN = {
    "front_desk": {"/complete", "/review"},
    "clinician": {"/confirm", "/check-in", "/no-show", "/cancel"},
    "admin": set(),
}


async def test_every_endpoint_needs_a_token(desk: Desk) -> None:
    series_id, [appointment_id] = await desk.course([london(date(2026, 3, 4))])
    for method, template, body in ENDPOINTS:
        path = template.format(id=appointment_id, series=series_id)
        reply = await desk.api.call(method, path, json=body, headers={"If-Match": '"1"'})
        assert reply.status == 401, (method, path)
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
        bad = await desk.api.call(
            method, path, json=body, headers={"Authorization": "Bearer rgm_nope"}
        )
        assert bad.status == 401, (method, path)


@pytest.mark.parametrize("role", ["front_desk", "clinician", "admin"])
async def test_each_role_is_refused_exactly_what_it_may_not_do(desk: Desk, role: str) -> None:
    series_id, [appointment_id] = await desk.course([london(date(2026, 3, 4))])
    for method, template, body in ENDPOINTS:
        path = template.format(id=appointment_id, series=series_id)
        # A stale If-Match: allowed requests stop at 412 and change nothing, forbidden ones 403.
        reply = await desk.api.call(
            method, path, role=role, json=body, headers={"If-Match": '"99"'}
        )
        forbidden = any(path.endswith(suffix) for suffix in FORBIDDEN[role])
        if forbidden:
            assert reply.status == 403, (role, path, reply.body)
            assert reply.body["detail"] == f"the {role} role may not do this"
        else:
            assert reply.status in (200, 412), (role, path, reply.body)


async def test_front_desk_may_not_write_clinical_plan_notes(desk: Desk) -> None:
    series_id, _ = await desk.course([london(date(2026, 3, 4))])
    reply = await desk.api.call(
        "PATCH",
        f"/api/v1/series/{series_id}",
        role="front_desk",
        json={"plan_notes": "double the dose"},
        headers={"If-Match": '"1"'},
    )
    assert reply.status == 403


async def test_no_show_sweep_marks_only_appointments_past_end_plus_grace(desk: Desk) -> None:
    now = desk.api.clock.now()  # Monday 2 March 09:00; the demo grace is 30 minutes
    thirty = timedelta(minutes=30)

    async def ended(ago: timedelta, status: str = "booked") -> int:
        # Each on its own practitioner: these times overlap.
        return await desk.appointment(
            now - ago - thirty, status=status, practitioner_id=await desk.new_practitioner()
        )

    overdue = await ended(timedelta(minutes=31))
    overdue_confirmed = await ended(timedelta(days=2), "confirmed")
    in_grace = await ended(timedelta(minutes=29))
    exactly = await ended(timedelta(minutes=30))  # end + grace == now: due
    checked_in = await ended(timedelta(days=1), "checked_in")
    cancelled = await ended(timedelta(days=1), "cancelled")
    future = await desk.appointment(now + timedelta(hours=3))

    assert await mark_no_shows(desk.pool, desk.api.clock) == 3
    assert await desk.status(overdue) == "no_show"
    assert await desk.status(overdue_confirmed) == "no_show"
    assert await desk.status(exactly) == "no_show"
    for untouched, status in [
        (in_grace, "booked"),
        (checked_in, "checked_in"),
        (cancelled, "cancelled"),
        (future, "booked"),
    ]:
        assert await desk.status(untouched) == status
    event = await desk.pool.fetchrow(
        "SELECT from_status, actor FROM appointment_event WHERE appointment_id = $1 "
        "AND to_status = 'no_show'",
        overdue_confirmed,
    )
    assert dict(event) == {"from_status": "confirmed", "actor": "system"}
    logged = await desk.audit("appointment.no_show")
    assert {row["entity_id"] for row in logged} == {overdue, overdue_confirmed, exactly}
    assert {row["actor_kind"] for row in logged} == {"system"}
    assert await desk.version(overdue) == 2

    assert await mark_no_shows(desk.pool, desk.api.clock) == 0
    desk.api.clock.advance(timedelta(minutes=1))
    assert await mark_no_shows(desk.pool, desk.api.clock) == 1
    assert await desk.status(in_grace) == "no_show"


async def test_the_sweep_works_through_more_than_one_batch(desk: Desk) -> None:
    start = london(date(2026, 2, 2), 9)
    patients = [await desk.new_patient(f"P{n}") for n in range(3)]
    made = 0
    for day in range(70):  # 70 days x 3 patients = 210 > one batch of 200
        for n, patient_id in enumerate(patients):
            await desk.appointment(
                start - timedelta(days=day) + timedelta(minutes=45 * n), patient_id=patient_id
            )
            made += 1
    assert await mark_no_shows(desk.pool, desk.api.clock) == made
