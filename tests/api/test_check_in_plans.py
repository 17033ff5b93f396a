"""A treatment's aftercare check-in plan through the admin API: the seeded default for the demo
courses (none for the consultation), replaced whole by a clinician, refused with a field path
when it is not a plan, and out of the front desk's reach. New course treatments start with the
default plan."""

from __future__ import annotations

from typing import Any

from tests.conftest import BookingApi


async def treatment_id(api: BookingApi, code: str) -> int:
    return int(await api.pool.fetchval("SELECT id FROM treatment WHERE code = $1", code))


def step(position: int, **extra: Any) -> dict[str, Any]:
    return {
        "position": position,
        "offset_hours": 24,
        "question": "How are you? 1 fine, 2 not sure, 3 worse",
        "answers": [
            {"digit": 1, "label": "fine", "tier": "fine"},
            {"digit": 2, "label": "not sure", "tier": "routine"},
            {"digit": 3, "label": "worse", "tier": "urgent"},
        ],
        **extra,
    }


async def test_the_demo_courses_have_the_clinical_defaults_and_the_consultation_none(
    booking_api: BookingApi,
) -> None:
    course = await treatment_id(booking_api, "hair-mesotherapy")
    reply = await booking_api.call(
        "GET", f"/api/v1/treatments/{course}/check-in-plan", role="front_desk"
    )
    assert reply.status == 200
    steps = reply.body["steps"]
    assert [(s["offset_hours"], s["offset_days"]) for s in steps] == [
        (24, None),
        (72, None),
        (None, 7),
        (None, 21),
    ]
    assert steps[0]["question"].startswith("How is your scalp? 1 fine or mild tenderness")
    assert [a["tier"] for a in steps[0]["answers"]] == ["fine", "routine", "urgent"]
    assert [a["tier"] for a in steps[1]["answers"]] == ["fine", "urgent", "urgent"]
    assert all(not s["fold_into_next_visit"] for s in steps)
    consultation = await treatment_id(booking_api, "consultation")
    none = await booking_api.call(
        "GET", f"/api/v1/treatments/{consultation}/check-in-plan", role="clinician"
    )
    assert none.status == 200 and none.body["steps"] == []


async def test_a_clinician_replaces_the_plan_and_it_is_audited(booking_api: BookingApi) -> None:
    course = await treatment_id(booking_api, "prp-hair")
    body = {"steps": [step(1), step(2, offset_hours=None, offset_days=7, at_local_time="10:00")]}
    reply = await booking_api.call(
        "PUT", f"/api/v1/treatments/{course}/check-in-plan", role="clinician", json=body
    )
    assert reply.status == 200, reply.body
    assert [s["position"] for s in reply.body["steps"]] == [1, 2]
    assert reply.body["steps"][1]["at_local_time"] == "10:00"
    again = await booking_api.call(
        "GET", f"/api/v1/treatments/{course}/check-in-plan", role="admin"
    )
    assert again.body == reply.body
    logged = await booking_api.pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'check_in_plan.replace' AND entity_id = $1",
        course,
    )
    assert logged == 1


async def test_a_plan_that_is_not_one_is_refused_naming_the_field(
    booking_api: BookingApi,
) -> None:
    course = await treatment_id(booking_api, "prp-hair")
    path = f"/api/v1/treatments/{course}/check-in-plan"
    cases = [
        ({"steps": [step(1, offset_days=7)]}, "steps.0"),  # both offsets
        ({"steps": [step(1), step(1)]}, "steps.1.position"),
        (
            {
                "steps": [
                    step(
                        1,
                        answers=[
                            {"digit": 1, "label": "a", "tier": "fine"},
                            {"digit": 1, "label": "b", "tier": "urgent"},
                        ],
                    )
                ]
            },
            "steps.0.answers.1.digit",
        ),
        (
            {"steps": [step(1, answers=[{"digit": 1, "label": "a", "tier": "bad"}])]},
            "steps.0.answers.0.tier",
        ),
        ({"steps": [step(1, at_local_time="09:00")]}, "steps.0.at_local_time"),
        # Folding a check-in into the next visit's questions is not built: refused, not ignored.
        ({"steps": [step(1, fold_into_next_visit=True)]}, "steps.0.fold_into_next_visit"),
    ]
    for body, field in cases:
        reply = await booking_api.call("PUT", path, role="admin", json=body)
        assert reply.status == 422, (field, reply.body)
        assert reply.headers["Content-Type"].startswith("application/problem+json")
        assert field in [e["path"] for e in reply.body["errors"]], (field, reply.body)
    # Nothing changed.
    unchanged = await booking_api.call("GET", path, role="admin")
    assert len(unchanged.body["steps"]) == 4


async def test_the_front_desk_cannot_change_a_clinical_plan(booking_api: BookingApi) -> None:
    course = await treatment_id(booking_api, "prp-hair")
    reply = await booking_api.call(
        "PUT",
        f"/api/v1/treatments/{course}/check-in-plan",
        role="front_desk",
        json={"steps": []},
    )
    assert reply.status == 403
    missing = await booking_api.call("GET", "/api/v1/treatments/999999/check-in-plan", role="admin")
    assert missing.status == 404


async def test_a_new_course_starts_with_the_default_plan(booking_api: BookingApi) -> None:
    created = await booking_api.call(
        "POST",
        "/api/v1/treatments",
        role="admin",
        json={
            "clinic_id": booking_api.clinic_id,
            "code": "new-course",
            "name": "New course",
            "duration_minutes": 30,
            "sessions_min": 2,
            "sessions_max": 2,
            "gaps": [{"position": 2, "min_days": 7, "target_days": 14, "max_days": 21}],
        },
    )
    assert created.status == 201, created.body
    plan = await booking_api.call(
        "GET", f"/api/v1/treatments/{created.body['id']}/check-in-plan", role="admin"
    )
    assert len(plan.body["steps"]) == 4
    single = await booking_api.call(
        "POST",
        "/api/v1/treatments",
        role="admin",
        json={
            "clinic_id": booking_api.clinic_id,
            "code": "chat",
            "name": "Chat",
            "duration_minutes": 15,
        },
    )
    plan = await booking_api.call(
        "GET", f"/api/v1/treatments/{single.body['id']}/check-in-plan", role="admin"
    )
    assert plan.body["steps"] == []


async def completed_course_session(api: BookingApi) -> tuple[int, int]:
    """A hair mesotherapy session checked in, completed by a clinician through the API: the
    patient (no consents: nobody may be written to) and the session."""
    from datetime import timedelta

    from tests import factories

    now = api.clock.now()
    practitioner_id = int(await api.pool.fetchval("SELECT min(id) FROM practitioner"))
    patient_id = await factories.patient(
        api.pool,
        clinic_id=api.clinic_id,
        first_name="Jo",
        last_name="Reed",
        mobile="+447700900444",
        email=None,
        date_of_birth=None,
        now=now,
    )
    appointment_id = await factories.appointment(
        api.pool,
        clinic_id=api.clinic_id,
        practitioner_id=practitioner_id,
        treatment_id=await treatment_id(api, "hair-mesotherapy"),
        patient_id=patient_id,
        starts_at=now - timedelta(minutes=30),
        now=now,
        status="checked_in",
    )
    version = await api.pool.fetchval(
        "SELECT version FROM appointment WHERE id = $1", appointment_id
    )
    done = await api.call(
        "POST",
        f"/api/v1/appointments/{appointment_id}/complete",
        role="clinician",
        headers={"If-Match": f'"{version}"'},
        json={"record": {"product": "Dermaheal HL", "lot_number": "LOT-1"}},
    )
    assert done.status == 200, done.body
    return patient_id, appointment_id


async def test_staff_see_a_sessions_check_ins_and_record_a_phoned_answer_once(
    booking_api: BookingApi,
) -> None:
    _, appointment_id = await completed_course_session(booking_api)
    path = f"/api/v1/appointments/{appointment_id}/check-ins"
    # Answers about a patient's health are clinical: the front desk does not read them.
    assert (await booking_api.call("GET", path, role="front_desk")).status == 403
    listed = await booking_api.call("GET", path, role="clinician")
    assert listed.status == 200
    items = listed.body["check_ins"]
    assert [(i["position"], i["channel"], i["status"]) for i in items] == [
        (1, "call", "planned"),
        (2, "call", "planned"),
        (3, "call", "planned"),
        (4, "call", "planned"),
    ]
    first = items[0]["id"]
    # The desk phoned: the patient said their forehead is swelling up and it hurts terribly.
    reply = await booking_api.call(
        "POST",
        f"/api/v1/check-ins/{first}/answer",
        role="front_desk",
        json={"answer": "2, and the pain is unbearable"},
    )
    assert reply.status == 200, reply.body
    assert (reply.body["tier"], reply.body["answer_digit"], reply.body["answered_via"]) == (
        "urgent",  # 2 is routine at 24 h; "unbearable pain" is an urgent sign
        2,
        "staff",
    )
    again = await booking_api.call(
        "POST", f"/api/v1/check-ins/{first}/answer", role="front_desk", json={"answer": "1"}
    )
    assert again.status == 409
    blank = await booking_api.call(
        "POST",
        f"/api/v1/check-ins/{items[1]['id']}/answer",
        role="front_desk",
        json={"answer": " "},
    )
    assert blank.status == 422 and [e["path"] for e in blank.body["errors"]] == ["answer"]
