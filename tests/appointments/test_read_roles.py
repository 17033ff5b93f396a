"""Least privilege on reads: the front desk sees who a patient is, how to reach them and their
bookings, never their allergies, medications, screening answers, clinical notes or what a
booking form said; clinicians and admins still see everything, and the OpenAPI document says
which role gets which shape."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

from shared.store import appointments, patients
from shared.store import series as series_store
from tests.appointments.conftest import HART, Desk, london

TUESDAY = date(2026, 3, 3)
CLINICAL_PATIENT_FIELDS = {"allergies", "medications", "screening", "notes"}
# Words that only the clinical fields of this file's patient contain.
SECRETS = ("lidocaine", "isotretinoin", "warfarin", "keloid", "aspirin", "hair loss since")


def leaked(body: Any) -> list[str]:
    text = json.dumps(body).lower()
    return [word for word in SECRETS if word in text]


async def clinical_patient(desk: Desk) -> None:
    """Give the fixture's patient every kind of clinical data, as a clinician would."""
    current = await patients.get(desk.pool, desk.patient_id)
    assert current is not None
    await patients.update(
        desk.pool,
        desk.patient_id,
        expected_version=current.version,
        changes={
            "allergies": "lidocaine",
            "medications": "isotretinoin",
            "screening": {"allergy": True, "details": "warfarin last year"},
            "notes": "keloid history; hair loss since 2024",
        },
        now=desk.api.clock.now(),
    )


async def flagged_booking(desk: Desk) -> int:
    """A session booked from a form that differed from the record, flagged for screening, then
    reviewed by a clinician (the history now holds all three)."""
    appointment_id = await desk.appointment(
        london(TUESDAY, 10),
        status="held",
        needs_review=True,
        review_reasons=["screening: 'allergy' answered positive (lidocaine)"],
    )
    async with desk.pool.acquire() as conn:
        await appointments.transition(
            conn,
            appointment_id,
            "booked",
            actor="patient:booking form",
            now=desk.api.clock.now(),
            reason="booked",
            details={"form_differs": {"medications": "warfarin"}},
        )
    reviewed = await desk.act(
        appointment_id, "review", role="clinician", json={"note": "stopped aspirin a week ago"}
    )
    assert reviewed.status == 200, reviewed.body
    await desk.pool.execute(
        "UPDATE appointment SET needs_review = true, review_reasons = $2 WHERE id = $1",
        appointment_id,
        ["screening: 'allergy' answered positive (lidocaine)"],
    )
    return appointment_id


async def test_a_front_desk_token_reading_a_patient_gets_no_clinical_field(desk: Desk) -> None:
    await clinical_patient(desk)
    path = f"/api/v1/patients/{desk.patient_id}"

    front = await desk.api.call("GET", path, role="front_desk")
    assert front.status == 200, front.body
    assert not CLINICAL_PATIENT_FIELDS & set(front.body)  # absent, not just empty
    assert front.body["first_name"] == "Ada" and front.body["mobile"] == "+447700900123"
    assert leaked(front.body) == []
    assert front.headers["ETag"] == f'"{front.body["version"]}"'  # still editable by the desk

    for role in ("clinician", "admin"):
        full = await desk.api.call("GET", path, role=role)
        assert full.body["allergies"] == "lidocaine" and full.body["medications"] == "isotretinoin"
        assert full.body["screening"]["allergy"] is True and "keloid" in full.body["notes"]

    # What a write answers is a read too.
    changed = await desk.api.call(
        "PATCH",
        path,
        role="front_desk",
        json={"last_name": "King"},
        headers={"If-Match": front.headers["ETag"]},
    )
    assert changed.status == 200, changed.body
    assert not CLINICAL_PATIENT_FIELDS & set(changed.body) and leaked(changed.body) == []
    created = await desk.api.call(
        "POST", "/api/v1/patients", role="front_desk", json={"first_name": "A", "last_name": "B"}
    )
    assert created.status == 201 and not CLINICAL_PATIENT_FIELDS & set(created.body)
    by_admin = await desk.api.call(
        "POST", "/api/v1/patients", role="admin", json={"first_name": "C", "last_name": "D"}
    )
    assert CLINICAL_PATIENT_FIELDS <= set(by_admin.body)


async def test_a_front_desk_token_reading_an_appointment_gets_no_review_reasons_or_notes(
    desk: Desk,
) -> None:
    appointment_id = await flagged_booking(desk)

    front = await desk.read(appointment_id, role="front_desk")
    assert "review_reasons" not in front.body and front.body["needs_review"] is True
    assert leaked(front.body) == []
    shown = [event["details"] for event in front.body["history"]]
    assert all(
        not {"form_differs", "reasons", "previous_reasons", "cleared_reasons"} & set(d)
        for d in shown
    )
    # The desk still sees that a review happened and can tell the bookings apart.
    assert {"review": "cleared"} in shown
    assert [e["to_status"] for e in front.body["history"]] == ["held", "booked", "booked"]

    full = await desk.read(appointment_id, role="clinician")
    assert full.body["review_reasons"] == ["screening: 'allergy' answered positive (lidocaine)"]
    assert {"form_differs": {"medications": "warfarin"}} in [
        e["details"] for e in full.body["history"]
    ]
    assert full.body["history"][-1]["reason"] == "stopped aspirin a week ago"

    listed = await desk.api.call(
        "GET", "/api/v1/appointments", role="front_desk", params={"patient_id": desk.patient_id}
    )
    (item,) = listed.body["items"]
    assert "review_reasons" not in item and leaked(listed.body) == []
    as_admin = await desk.api.call(
        "GET", "/api/v1/appointments", role="admin", params={"patient_id": desk.patient_id}
    )
    assert "review_reasons" in as_admin.body["items"][0]


async def test_what_desk_actions_answer_carries_no_clinical_field(desk: Desk) -> None:
    appointment_id = await flagged_booking(desk)

    confirmed = await desk.act(appointment_id, "confirm")
    assert confirmed.status == 200, confirmed.body
    assert "review_reasons" not in confirmed.body and leaked(confirmed.body) == []

    desk.api.clock.set(london(TUESDAY, 8))
    moved = await desk.act(
        appointment_id, "reschedule", json={"starts_at": london(TUESDAY, 14).isoformat()}
    )
    assert moved.status == 200, moved.body
    assert "review_reasons" not in moved.body["appointment"] and leaked(moved.body) == []

    cancelled = await desk.act(
        appointment_id,
        "cancel",
        json={"reason": "patient called", "override": True, "override_reason": "ill"},
    )
    assert cancelled.status == 200, cancelled.body
    assert "review_reasons" not in cancelled.body["appointment"] and leaked(cancelled.body) == []


async def test_a_front_desk_day_schedule_names_patients_but_no_clinical_field(desk: Desk) -> None:
    await clinical_patient(desk)
    await flagged_booking(desk)
    reply = await desk.api.call(
        "GET",
        f"/api/v1/practitioners/{HART}/schedule",
        role="front_desk",
        params={"date": TUESDAY.isoformat()},
    )
    assert reply.status == 200, reply.body
    (day,) = reply.body["days"]
    (item,) = day["appointments"]
    assert item["patient_name"] == "Ada Lovelace" and item["needs_review"] is True
    assert not {"review_reasons", *CLINICAL_PATIENT_FIELDS} & set(item)
    assert leaked(reply.body) == []


async def test_a_front_desk_token_reading_a_series_gets_no_plan_notes(desk: Desk) -> None:
    series_id, ids = await desk.course(
        [london(TUESDAY + timedelta(weeks=k)) for k in range(3)], code="hair-mesotherapy"
    )
    async with desk.pool.acquire() as conn:
        await series_store.update(
            conn,
            series_id,
            plan_notes="keloid risk: low dose",
            status=None,
            expected_version=None,
            now=desk.api.clock.now(),
        )
    await desk.pool.execute(
        "UPDATE appointment SET needs_review = true, review_reasons = $2 WHERE id = $1",
        ids[0],
        ["screening: isotretinoin"],
    )

    front = await desk.api.call("GET", f"/api/v1/series/{series_id}", role="front_desk")
    assert front.status == 200, front.body
    assert "plan_notes" not in front.body
    assert all("review_reasons" not in session for session in front.body["sessions"])
    assert len(front.body["sessions"]) == 3 and leaked(front.body) == []
    listed = await desk.api.call(
        "GET", "/api/v1/series", role="front_desk", params={"patient_id": desk.patient_id}
    )
    assert "plan_notes" not in listed.body["items"][0]
    paused = await desk.api.call(
        "PATCH",
        f"/api/v1/series/{series_id}",
        role="front_desk",
        json={"status": "paused"},
        headers={"If-Match": front.headers["ETag"]},
    )
    assert paused.status == 200, paused.body
    assert "plan_notes" not in paused.body and leaked(paused.body) == []

    full = await desk.api.call("GET", f"/api/v1/series/{series_id}", role="clinician")
    assert full.body["plan_notes"] == "keloid risk: low dose"
    assert full.body["sessions"][0]["review_reasons"] == ["screening: isotretinoin"]


# -- the document --------------------------------------------------------------------------------

# Properties that hold clinical data wherever they appear in a response.
CLINICAL_PROPERTIES = {*CLINICAL_PATIENT_FIELDS, "plan_notes", "review_reasons", "form_differs"}


def _properties(schema: dict[str, Any], document: dict[str, Any], seen: set[str]) -> set[str]:
    """Every property name reachable from `schema`, following $refs."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return set()
        seen.add(name)
        return _properties(document["components"]["schemas"][name], document, seen)
    found = set(schema.get("properties", {}))
    children = [
        *schema.get("properties", {}).values(),
        *schema.get("anyOf", []),
        *schema.get("oneOf", []),
        *schema.get("allOf", []),
    ]
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            children.append(schema[key])
    for child in children:
        found |= _properties(child, document, seen)
    return found


async def test_the_openapi_document_gives_each_role_its_shape(desk: Desk) -> None:
    document = (await desk.api.call("GET", "/api/openapi.json")).body
    get_patient = document["paths"]["/api/v1/patients/{patient_id}"]["get"]
    by_role = get_patient["x-response-by-role"]
    assert by_role["front_desk"] == {"$ref": "#/components/schemas/PatientContactOut"}
    assert by_role["clinician"] == by_role["admin"] == {"$ref": "#/components/schemas/PatientOut"}
    assert "front_desk: PatientContactOut" in get_patient["responses"]["200"]["description"]
    contact = document["components"]["schemas"]["PatientContactOut"]
    assert contact["additionalProperties"] is False  # and no other field comes
    assert CLINICAL_PATIENT_FIELDS <= set(
        document["components"]["schemas"]["PatientOut"]["properties"]
    )

    # Every operation the front desk may call answers it a shape without clinical properties.
    checked = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            if "front_desk" not in operation.get("x-roles", []):
                continue
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if not status.startswith("2") or schema is None:
                    continue
                desk_schema = operation.get("x-response-by-role", {}).get("front_desk", schema)
                shown = _properties(desk_schema, document, set())
                assert not shown & CLINICAL_PROPERTIES, (method, path, shown & CLINICAL_PROPERTIES)
                checked.append((method, path))
    assert ("get", "/api/v1/appointments/{appointment_id}") in checked
    assert ("get", "/api/v1/series/{series_id}") in checked
    assert ("post", "/api/v1/appointments/{appointment_id}/cancel") in checked
