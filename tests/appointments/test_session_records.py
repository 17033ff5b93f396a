"""The session record (issue 13 item 1): taken with the completion or added later, corrected
with its history kept, shown to clinicians and admins only; the recall search by lot number
with each patient's contact status (JSON and CSV); and the patient's safety timeline. All
through the real admin API on a real socket and a real PostgreSQL."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from typing import Any

import asyncpg
import pytest

from shared.store import clinics, consents, patients, practitioners, treatments
from shared.store.clinics import ClinicSettings
from shared.store.practitioners import PractitionerFields
from shared.store.treatments import TreatmentFields
from tests import factories
from tests.appointments.conftest import Desk, london, paths

TUESDAY = date(2026, 3, 3)  # the day after the frozen clock's Monday

RECORD = {
    "product": "Dermaheal HL",
    "formulation": "biotin 0.1% + peptides",
    "lot_number": "DH-2291",
    "lot_expiry": "2027-01-31",
    "injection_areas": ["crown", "vertex"],
    "depth_mm": 1.5,
    "needle_length_mm": 4,
    "volume_ml": 2.5,
    "anaesthetic": "lidocaine 2.5% cream",
    "notes": "tolerated well",
}


async def _checked_in_course_session(desk: Desk) -> int:
    """The first session of a hair mesotherapy course, checked in at its start."""
    start = london(TUESDAY, 10)
    _, ids = await desk.course([start, start + timedelta(days=7)])
    desk.api.clock.set(start)
    assert (await desk.act(ids[0], "check-in")).status == 200
    return ids[0]


async def _record_row(pool: asyncpg.Pool, appointment_id: int) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT * FROM session_record WHERE appointment_id = $1", appointment_id
    )


async def test_completing_with_a_record_stores_it_and_shows_it_to_clinicians(desk: Desk) -> None:
    appointment_id = await _checked_in_course_session(desk)

    done = await desk.act(appointment_id, "complete", role="clinician", json={"record": RECORD})

    assert done.status == 200, done.body
    assert done.body["status"] == "completed"
    shown = done.body["session_record"]
    assert shown["lot_number"] == "DH-2291" and shown["lot_expiry"] == "2027-01-31"
    assert shown["injection_areas"] == ["crown", "vertex"]
    assert shown["depth_mm"] == 1.5 and shown["needle_length_mm"] == 4 and shown["volume_ml"] == 2.5
    assert shown["performed_by"] == 1  # the appointment's practitioner by default
    assert shown["recorded_by"] == "staff:3" and shown["version"] == 1
    read = await desk.read(appointment_id, role="admin")
    assert read.body["session_record"] == shown
    full = await desk.api.call(
        "GET", f"/api/v1/appointments/{appointment_id}/session-record", role="clinician"
    )
    assert full.status == 200
    assert [v["version"] for v in full.body["history"]] == [1]
    assert full.body["history"][0]["record"]["product"] == "Dermaheal HL"
    (logged,) = await desk.audit("session_record.create", appointment_id)
    assert "lot_number" in logged["details"]["fields"]
    # The audit log names fields, never the clinical values.
    assert "DH-2291" not in str(logged["details"])


@pytest.mark.parametrize(
    ("record", "path"),
    [
        ({**RECORD, "lot_expiry": "2026-03-02"}, "record.lot_expiry"),  # expired the day before
        ({k: v for k, v in RECORD.items() if k != "lot_number"}, "record.lot_number"),
        ({k: v for k, v in RECORD.items() if k != "product"}, "record.product"),
        ({**RECORD, "depth_mm": -1}, "record.depth_mm"),
        ({**RECORD, "injection_areas": ["crown", ""]}, "record.injection_areas.1"),
        ({**RECORD, "colour": "blue"}, "record.colour"),
        ({**RECORD, "lot_expiry": "31/01/2027"}, "record.lot_expiry"),
        ({**RECORD, "performed_by": 999}, "record.performed_by"),
        ({**RECORD, "expired_lot_acknowledged": True}, "record.expired_lot_acknowledged"),
    ],
)
async def test_a_bad_record_is_refused_by_its_field_path_and_nothing_is_completed(
    desk: Desk, record: dict[str, Any], path: str
) -> None:
    appointment_id = await _checked_in_course_session(desk)

    refused = await desk.act(appointment_id, "complete", role="clinician", json={"record": record})

    assert refused.status == 422, refused.body
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert paths(refused) == {path}
    assert await desk.status(appointment_id) == "checked_in"
    assert await _record_row(desk.pool, appointment_id) is None


async def test_an_expired_lot_is_refused_with_a_clear_message_unless_its_use_is_acknowledged(
    desk: Desk,
) -> None:
    appointment_id = await _checked_in_course_session(desk)
    expired = {**RECORD, "lot_expiry": "2026-02-28"}

    refused = await desk.act(appointment_id, "complete", role="clinician", json={"record": expired})
    assert refused.status == 422
    assert "expired on 2026-02-28, before the session on 2026-03-03" in refused.body["detail"]

    # A lot expiring on the session's own day is still in date.
    same_day = {**RECORD, "lot_expiry": "2026-03-03"}
    other = await _checked_in_course_session_at(desk, 14)
    assert (
        await desk.act(other, "complete", role="clinician", json={"record": same_day})
    ).status == 200

    acknowledged = {**expired, "expired_lot_acknowledged": True}
    done = await desk.act(
        appointment_id, "complete", role="clinician", json={"record": acknowledged}
    )
    assert done.status == 200, done.body
    assert done.body["session_record"]["expired_lot_acknowledged"] is True
    (logged,) = await desk.audit("session_record.create", appointment_id)
    assert logged["details"]["expired_lot_acknowledged"] is True


async def _checked_in_course_session_at(desk: Desk, hour: int) -> int:
    start = london(TUESDAY, hour)
    patient_id = await desk.new_patient("Other")
    appointment_id = await desk.appointment(start, code="prp-hair", patient_id=patient_id)
    desk.api.clock.set(start)
    assert (await desk.act(appointment_id, "check-in")).status == 200
    return appointment_id


async def test_a_course_session_needs_a_record_but_a_consultation_needs_none(desk: Desk) -> None:
    appointment_id = await _checked_in_course_session(desk)
    bare = await desk.act(appointment_id, "complete", role="clinician")
    assert bare.status == 422 and paths(bare) == {"record"}
    assert await desk.status(appointment_id) == "checked_in"

    start = london(TUESDAY, 15)
    consultation = await desk.appointment(start, code="consultation")
    desk.api.clock.set(start)
    assert (await desk.act(consultation, "check-in")).status == 200
    done = await desk.act(consultation, "complete", role="clinician")
    assert done.status == 200 and done.body["session_record"] is None


async def test_the_front_desk_reads_no_record_and_no_recall(desk: Desk) -> None:
    appointment_id = await _checked_in_course_session(desk)
    assert (
        await desk.act(appointment_id, "complete", role="clinician", json={"record": RECORD})
    ).status == 200

    desk_view = await desk.read(appointment_id, role="front_desk")
    assert "session_record" not in desk_view.body and "DH-2291" not in str(desk_view.body)
    base = f"/api/v1/appointments/{appointment_id}/session-record"
    for method, path, body in (
        ("GET", base, None),
        ("PUT", base, {**RECORD, "reason": "x"}),
        ("PATCH", base, {"notes": "x", "reason": "x"}),
        ("GET", "/api/v1/recall?lot_number=DH-2291", None),
        ("GET", "/api/v1/recall.csv?lot_number=DH-2291", None),
        ("GET", f"/api/v1/patients/{desk.patient_id}/safety-timeline", None),
    ):
        reply = await desk.api.call(method, path, role="front_desk", json=body)
        assert reply.status == 403, (method, path)
        assert "DH-2291" not in str(reply.body)
    # The complete action itself is not the desk's either.
    assert (await desk.act(appointment_id, "complete", json={"record": RECORD})).status == 403


async def test_a_correction_keeps_the_earlier_values_in_the_history(desk: Desk) -> None:
    appointment_id = await _checked_in_course_session(desk)
    assert (
        await desk.act(appointment_id, "complete", role="clinician", json={"record": RECORD})
    ).status == 200
    path = f"/api/v1/appointments/{appointment_id}/session-record"
    correction = {"lot_number": "DH-2292", "reason": "misread the vial label"}

    no_version = await desk.api.call("PATCH", path, role="clinician", json=correction)
    assert no_version.status == 428
    stale = await desk.api.call(
        "PATCH", path, role="clinician", json=correction, headers={"If-Match": '"7"'}
    )
    assert stale.status == 412
    overwrite = await desk.api.call("PUT", path, role="clinician", json={**RECORD, "reason": "x"})
    assert overwrite.status == 409 and overwrite.body["type"].endswith("/record-exists")
    no_reason = await desk.api.call(
        "PATCH", path, role="clinician", json={"lot_number": "X"}, headers={"If-Match": '"1"'}
    )
    assert no_reason.status == 422 and paths(no_reason) == {"reason"}

    corrected = await desk.api.call(
        "PATCH", path, role="clinician", json=correction, headers={"If-Match": '"1"'}
    )

    assert corrected.status == 200, corrected.body
    assert corrected.body["lot_number"] == "DH-2292" and corrected.body["version"] == 2
    assert corrected.body["product"] == "Dermaheal HL"  # what was not sent stays
    assert corrected.headers["ETag"] == '"2"'
    full = await desk.api.call("GET", path, role="admin")
    history = full.body["history"]
    assert [(v["version"], v["record"]["lot_number"]) for v in history] == [
        (1, "DH-2291"),
        (2, "DH-2292"),
    ]
    assert history[1]["reason"] == "misread the vial label"
    assert history[1]["actor"] == "staff:3"
    (logged,) = await desk.audit("session_record.correct", appointment_id)
    assert logged["details"]["fields"] == ["lot_number"]
    assert logged["reason"] == "misread the vial label"
    # The corrected lot is what a recall finds now.
    old = await desk.api.call(
        "GET", "/api/v1/recall", role="clinician", params={"lot_number": "DH-2291"}
    )
    new = await desk.api.call(
        "GET", "/api/v1/recall", role="clinician", params={"lot_number": "DH-2292"}
    )
    assert old.body["items"] == [] and len(new.body["items"]) == 1
    # A correction is checked like a new record.
    expired = await desk.api.call(
        "PATCH",
        path,
        role="clinician",
        json={"lot_expiry": "2025-12-31", "reason": "expiry"},
        headers={"If-Match": '"2"'},
    )
    assert expired.status == 422 and paths(expired) == {"lot_expiry"}


async def test_a_record_can_be_added_after_the_completion_but_only_to_a_completed_session(
    desk: Desk,
) -> None:
    start = london(TUESDAY, 10)
    done_id = await desk.appointment(start - timedelta(days=7), code="prp-hair", status="completed")
    booked_id = await desk.appointment(start, code="prp-hair")

    not_done = await desk.api.call(
        "PUT",
        f"/api/v1/appointments/{booked_id}/session-record",
        role="clinician",
        json={**RECORD, "reason": "recorded on paper"},
    )
    assert not_done.status == 409 and not_done.body["type"].endswith("/not-completed")
    added = await desk.api.call(
        "PUT",
        f"/api/v1/appointments/{done_id}/session-record",
        role="admin",
        json={**RECORD, "reason": "copied from the paper record"},
    )
    assert added.status == 200, added.body
    assert added.body["version"] == 1
    (logged,) = await desk.audit("session_record.create", done_id)
    assert logged["reason"] == "copied from the paper record"


async def _second_clinic(pool: asyncpg.Pool, now: Any) -> tuple[int, int, int]:
    """A Dublin clinic with a practitioner and a PRP course: (clinic, practitioner, treatment)."""
    async with pool.acquire() as conn:
        clinic = await clinics.insert(
            conn,
            ClinicSettings(
                name="Dublin Hair Clinic",
                time_zone="Europe/Dublin",
                phone="+35312345678",
                address="2 Demo Road, Dublin",
                region="IE",
            ),
            now=now,
        )
        practitioner = await practitioners.insert(
            conn, clinic_id=clinic.id, fields=PractitionerFields(name="Dr Niamh Byrne")
        )
        treatment = await treatments.insert(
            conn,
            clinic_id=clinic.id,
            fields=TreatmentFields(
                code="prp-hair",
                name="PRP for hair",
                duration_minutes=60,
                sessions_min=4,
                sessions_max=4,
            ),
        )
    return clinic.id, practitioner.id, treatment.id


async def test_a_lot_given_to_three_patients_in_two_clinics_is_found_with_each_contact_status(
    desk: Desk,
) -> None:
    api, pool, now = desk.api, desk.pool, desk.api.clock.now()
    dublin, niamh, dublin_prp = await _second_clinic(pool, now)
    reachable = await factories.patient(
        pool,
        clinic_id=api.clinic_id,
        first_name="Rosa",
        last_name="Franklin",
        mobile="+447700900201",
        email="rosa@example.test",
        date_of_birth=None,
        now=now,
    )
    await factories.consent(pool, reachable, {"care_sms": True, "care_email": True}, now=now)
    opted_out = await factories.patient(
        pool,
        clinic_id=api.clinic_id,
        first_name="Marie",
        last_name="Curie",
        mobile="+447700900202",
        email=None,
        date_of_birth=None,
        now=now,
    )
    await factories.consent(pool, opted_out, {"care_sms": True}, now=now)
    await patients.record_sms_opt_out(pool, opted_out, now=now)
    erased = await factories.patient(
        pool,
        clinic_id=dublin,
        first_name="Kathleen",
        last_name="Lonsdale",
        mobile=None,
        email="kathleen@example.test",
        date_of_birth=None,
        now=now,
    )
    await consents.insert(
        pool,
        erased,
        kind="care_email",
        granted=True,
        source="test",
        wording_version="v1",
        now=now,
    )
    other_lot = await factories.patient(
        pool,
        clinic_id=api.clinic_id,
        first_name="Other",
        last_name="Lot",
        mobile=None,
        email=None,
        date_of_birth=None,
        now=now,
    )
    prp = await desk.treatment_id("prp-hair")
    sessions = [
        (reachable, api.clinic_id, 1, prp, 10, "lot-77a"),
        (opted_out, api.clinic_id, 2, prp, 11, "LOT-77A"),
        (erased, dublin, niamh, dublin_prp, 12, " Lot-77a "),
        (other_lot, api.clinic_id, 1, prp, 14, "LOT-78"),
    ]
    ids = {}
    for patient_id, clinic_id, practitioner_id, treatment_id, hour, lot in sessions:
        appointment_id = await factories.appointment(
            pool,
            clinic_id=clinic_id,
            practitioner_id=practitioner_id,
            treatment_id=treatment_id,
            patient_id=patient_id,
            starts_at=london(date(2026, 2, 24), hour),
            now=now,
            status="completed",
        )
        put = await api.call(
            "PUT",
            f"/api/v1/appointments/{appointment_id}/session-record",
            role="clinician",
            json={"product": "PRP kit", "lot_number": lot, "reason": "entered after the session"},
        )
        assert put.status == 200, put.body
        ids[patient_id] = appointment_id
    erase = await api.call(
        "POST",
        f"/api/v1/patients/{erased}/erase",
        role="admin",
        json={"reason": "erasure request by email"},
    )
    assert erase.status == 200, erase.body

    found = await api.call(
        "GET", "/api/v1/recall", role="clinician", params={"lot_number": "  lot-77A "}
    )

    assert found.status == 200, found.body
    by_patient = {item["patient_id"]: item for item in found.body["items"]}
    assert set(by_patient) == {reachable, opted_out, erased}
    assert {item["clinic_id"] for item in found.body["items"]} == {api.clinic_id, dublin}
    contact = {pid: item["contact"] for pid, item in by_patient.items()}
    assert contact[reachable]["sms"] is True and contact[reachable]["email"] is True
    assert contact[opted_out]["sms"] is False and contact[opted_out]["sms_opted_out"] is True
    assert contact[opted_out]["email"] is False  # no address
    assert contact[erased]["erased"] is True
    assert contact[erased]["sms"] is False and contact[erased]["email"] is False
    assert contact[erased]["email_address"] is None
    assert by_patient[erased]["appointment_id"] == ids[erased]
    # Newest session first; the clinic and product filters narrow it.
    assert [i["patient_id"] for i in found.body["items"]] == [erased, opted_out, reachable]
    in_dublin = await api.call(
        "GET", "/api/v1/recall", role="admin", params={"lot_number": "LOT-77A", "clinic_id": dublin}
    )
    assert [i["patient_id"] for i in in_dublin.body["items"]] == [erased]
    other_product = await api.call(
        "GET", "/api/v1/recall", role="admin", params={"lot_number": "LOT-77A", "product": "Other"}
    )
    assert other_product.body["items"] == []
    # Paginated like every list: two pages of up to two.
    first = await api.call(
        "GET", "/api/v1/recall", role="admin", params={"lot_number": "LOT-77A", "limit": 2}
    )
    second = await api.call(
        "GET",
        "/api/v1/recall",
        role="admin",
        params={"lot_number": "LOT-77A", "limit": 2, "cursor": first.body["next_cursor"]},
    )
    assert len(first.body["items"]) == 2 and second.body["next_cursor"] is None
    assert [i["patient_id"] for i in first.body["items"] + second.body["items"]] == [
        erased,
        opted_out,
        reachable,
    ]
    # Each patient shown is a read of their record in the audit log.
    reads = await pool.fetch(
        "SELECT patient_id FROM audit_log WHERE action = 'patient.read' "
        "AND details->>'view' = 'recall'"
    )
    assert {r["patient_id"] for r in reads} >= {reachable, opted_out, erased}

    sheet = await api.call(
        "GET", "/api/v1/recall.csv", role="clinician", params={"lot_number": "lot-77a"}
    )

    assert sheet.status == 200 and sheet.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in sheet.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(sheet.body)))
    assert {int(r["patient_id"]) for r in rows} == {reachable, opted_out, erased}
    by_id = {int(r["patient_id"]): r for r in rows}
    assert by_id[reachable]["reach_by_sms"] == "yes" and by_id[reachable]["reach_by_email"] == "yes"
    assert by_id[opted_out]["reach_by_sms"] == "no" and by_id[opted_out]["sms_opted_out"] == "yes"
    assert by_id[erased]["erased"] == "yes" and by_id[erased]["email"] == ""
    # A mobile would be a formula to a spreadsheet: it is kept as text.
    assert by_id[reachable]["mobile"] == "'+447700900201"
    missing = await api.call("GET", "/api/v1/recall", role="clinician")
    assert missing.status == 422 and paths(missing) == {"lot_number"}


async def test_the_safety_timeline_lists_sessions_with_records_and_corrections_newest_first(
    desk: Desk,
) -> None:
    appointment_id = await _checked_in_course_session(desk)
    done = await desk.act(appointment_id, "complete", role="clinician", json={"record": RECORD})
    assert done.status == 200
    cancelled = await desk.appointment(london(date(2026, 3, 20)), code="prp-hair")
    cancel = await desk.act(cancelled, "cancel", json={"reason": "patient asked"})
    assert cancel.status == 200, cancel.body
    desk.api.clock.advance(timedelta(hours=2))
    corrected = await desk.api.call(
        "PATCH",
        f"/api/v1/appointments/{appointment_id}/session-record",
        role="clinician",
        json={"volume_ml": 3, "reason": "syringe log says 3 ml"},
        headers={"If-Match": '"1"'},
    )
    assert corrected.status == 200, corrected.body

    timeline = await desk.api.call(
        "GET", f"/api/v1/patients/{desk.patient_id}/safety-timeline", role="clinician"
    )

    assert timeline.status == 200, timeline.body
    # (The completed session's check-ins are entries too: tests/adverse_events reads those.)
    entries = [e for e in timeline.body["entries"] if e["type"] != "check_in"]
    assert [(e["type"], e["appointment_id"]) for e in entries] == [
        ("session", appointment_id + 1),  # the course's second session, a week later
        ("record_correction", appointment_id),
        ("session", appointment_id),
    ]
    upcoming, correction, session = entries
    assert upcoming["status"] == "booked" and upcoming["session_record"] is None
    assert session["status"] == "completed" and session["session_record"]["volume_ml"] == 3
    assert correction["before"] == {"volume_ml": 2.5} and correction["after"] == {"volume_ml": 3.0}
    assert correction["reason"] == "syringe log says 3 ml"
    assert cancelled not in {e["appointment_id"] for e in entries}
    logged = await desk.pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'patient.read' AND patient_id = $1 "
        "AND details->>'view' = 'safety_timeline'",
        desk.patient_id,
    )
    assert logged == 1
    unknown = await desk.api.call("GET", "/api/v1/patients/99999/safety-timeline", role="admin")
    assert unknown.status == 404


async def test_a_new_user_books_checks_in_and_completes_a_session_with_a_lot_number(
    desk: Desk,
) -> None:
    """The `regimen dev` try-out: the README's API steps, from a new patient to a recall (the
    clinician books the course for a patient consulted elsewhere, with the screening answers)."""
    api = desk.api
    patient = await api.call(
        "POST",
        "/api/v1/patients",
        role="front_desk",
        json={"first_name": "Try", "last_name": "Out", "mobile": "07911 123457"},
    )
    assert patient.status == 201, patient.body
    start = london(TUESDAY, 10)
    booked = await api.call(
        "POST",
        "/api/v1/bookings",
        role="clinician",
        json={
            "patient_id": patient.body["id"],
            "treatment_id": await desk.treatment_id("hair-mesotherapy"),
            "practitioner_id": 1,
            "start": start.isoformat(),
            "consultation_override": {"reason": "consulted at our other clinic"},
            "screening": await factories.screening_all_no(api.pool, api.clinic_id),
        },
    )
    assert booked.status == 201, booked.body
    first = booked.body["appointments"][0]["id"]
    api.clock.set(start - timedelta(minutes=10))
    assert (await desk.act(first, "check-in")).status == 200
    done = await desk.act(
        first,
        "complete",
        role="clinician",
        json={"record": {"product": "Dermaheal HL", "lot_number": "DEMO-LOT-1"}},
    )
    assert done.status == 200, done.body
    found = await api.call(
        "GET", "/api/v1/recall", role="clinician", params={"lot_number": "demo-lot-1"}
    )
    assert [i["appointment_id"] for i in found.body["items"]] == [first]
