"""What a booking form said about a patient on file waits for a clinician, who compares it with
the patient and marks it reviewed; the front desk never sees it (it holds medical answers)."""

from __future__ import annotations

from shared.store import patients
from tests import factories
from tests.booking.conftest import Demo, form

FIRST = "2026-03-03T10:00:00Z"


async def matched_booking(demo: Demo) -> int:
    known = await factories.patient(
        demo.pool,
        clinic_id=demo.clinic_id,
        first_name="Ada",
        last_name="Lovelace",
        mobile="+447911123456",
        email=None,
        date_of_birth=None,
        now=demo.api.clock.now(),
    )
    hold = await demo.hold(demo.consultation, [{"practitioner_id": 1, "start": FIRST}])
    booked = await demo.book(hold.body["token"], form(allergies="lidocaine"))
    assert booked.status == 201, booked.body
    return known


async def test_a_clinician_reviews_what_the_form_said(demo: Demo) -> None:
    patient_id = await matched_booking(demo)
    assert (await demo.call("GET", "/api/v1/form-differences", role="front_desk")).status == 403
    listed = await demo.call("GET", "/api/v1/form-differences", role="clinician")
    assert listed.status == 200, listed.body
    [item] = listed.body["items"]
    assert item["patient_id"] == patient_id and item["reviewed_at"] is None
    assert item["submitted"]["allergies"] == "lidocaine"
    assert item["submitted"]["email"] == "ada@example.com"
    assert item["submitted"]["date_of_birth"] == "1985-12-10"
    read = await demo.pool.fetchrow("SELECT * FROM audit_log WHERE action = 'form_difference.read'")
    assert read["patient_id"] == patient_id

    path = f"/api/v1/form-differences/{item['id']}/review"
    assert (await demo.call("POST", path, role="clinician", json={"note": ""})).status == 422
    done = await demo.call(
        "POST", path, role="clinician", json={"note": "rang Ada: allergy confirmed, added"}
    )
    assert done.status == 200, done.body
    assert done.body["reviewed_at"] is not None and done.body["reviewed_by"].startswith("staff:")
    again = await demo.call("POST", path, role="admin", json={"note": "again"})
    assert again.status == 409
    # The record itself is untouched by the review: staff change it through the patients API.
    patient = await patients.get(demo.pool, patient_id)
    assert patient is not None and patient.allergies == ""

    empty = await demo.call("GET", "/api/v1/form-differences", role="clinician")
    assert empty.body["items"] == []
    everything = await demo.call(
        "GET",
        "/api/v1/form-differences",
        role="admin",
        params={"include_reviewed": "true", "patient_id": str(patient_id)},
    )
    assert [i["id"] for i in everything.body["items"]] == [item["id"]]
    unknown = await demo.call(
        "POST", "/api/v1/form-differences/999/review", role="admin", json={"note": "x"}
    )
    assert unknown.status == 404
