"""The consultation gate on every booking path (services/booking/domain/consultation_gate.py):
a course whose treatment needs a consultation is not booked without one, except by a
clinician's logged override; later sessions of a course are not gated again."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from services.booking.domain import bookings, holds, intake, offers
from services.booking.domain.consultation_gate import CONSULTATION_CLAIMED
from services.booking.domain.sessions import SessionRequest
from shared.store.audit import Actor
from tests import factories
from tests.safety.conftest import FORM_MOBILE, Clinic

TUESDAY = datetime(2026, 3, 3, 10, tzinfo=UTC)  # 10:00 London, the day after the clock


async def _booked_count(clinic: Clinic) -> int:
    return int(
        await clinic.pool.fetchval(
            "SELECT count(*) FROM appointment WHERE status IN ('booked', 'confirmed')"
        )
    )


async def test_a_stranger_cannot_book_a_course_through_the_public_api_without_a_consultation(
    clinic: Clinic,
) -> None:
    refused = await clinic.public_course()
    assert refused.status == 409, refused.body
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert refused.body["type"].endswith("/consultation-required")
    assert "book a consultation" in refused.body["detail"]
    # Nothing was booked, not even the new patient.
    assert await _booked_count(clinic) == 0
    assert await clinic.pool.fetchval("SELECT count(*) FROM patient") == 0


async def test_the_public_api_answers_the_same_whether_or_not_a_consultation_is_on_file(
    clinic: Clinic,
) -> None:
    """Whoever calls the public API may know no more than the patient's mobile: a 201 for a
    patient with a consultation on file against a 409 for one without would read their record
    out to them. So the API refuses every course that needs a consultation alike; the clinic
    books the course for a patient with one on file (staff booking, no override needed)."""
    ada = await clinic.patient(mobile=FORM_MOBILE)
    consultation = await factories.completed_consultation(
        clinic.pool, clinic_id=clinic.api.clinic_id, patient_id=ada, now=clinic.now
    )
    refused = await clinic.public_course()
    assert refused.status == 409, refused.body
    assert refused.body["type"].endswith("/consultation-required")
    assert "the clinic books the course with you" in refused.body["detail"]
    assert await _booked_count(clinic) == 0  # nothing booked

    # (The refused attempt's hold still holds 10:00: staff book 11:00.)
    booked = await clinic.staff_book(
        ada, "hair-mesotherapy", TUESDAY + timedelta(hours=1), screening=await clinic.all_no()
    )
    assert booked.status == 201, booked.body
    entry = await clinic.pool.fetchrow(
        "SELECT details FROM audit_log WHERE action = 'booking.create' AND patient_id = $1", ada
    )
    assert entry["details"]["consultation"] == {
        "basis": "on_file",
        "consultation_appointment_id": consultation,
    }


async def test_a_booked_consultation_counts_only_if_it_ends_before_the_course_starts(
    clinic: Clinic,
) -> None:
    ada = await clinic.patient(mobile=FORM_MOBILE)
    # Booked for Wednesday, after the course's first session on Tuesday: it does not count.
    late = await clinic.staff_book(
        ada, "consultation", TUESDAY + timedelta(days=1), screening=await clinic.all_no()
    )
    assert late.status == 201, late.body
    course = await clinic.staff_book(
        ada, "hair-mesotherapy", TUESDAY, screening=await clinic.all_no()
    )
    assert course.status == 409 and course.body["type"].endswith("/consultation-required")
    # Booked for Monday afternoon, before it: the course is booked.
    early = await clinic.staff_book(
        ada,
        "consultation",
        datetime(2026, 3, 2, 14, tzinfo=UTC),
        screening=await clinic.all_no(),
    )
    assert early.status == 201, early.body
    course = await clinic.staff_book(
        ada, "hair-mesotherapy", TUESDAY, screening=await clinic.all_no()
    )
    assert course.status == 201, course.body


async def test_staff_booking_a_course_without_a_consultation_is_refused(clinic: Clinic) -> None:
    grace = await clinic.patient("Grace")
    for role in ("front_desk", "clinician", "admin"):
        refused = await clinic.staff_book(grace, "prp-hair", TUESDAY, role=role)
        assert refused.status == 409, refused.body
        assert refused.body["type"].endswith("/consultation-required")
    assert await _booked_count(clinic) == 0


async def test_the_front_desk_cannot_override_the_consultation(clinic: Clinic) -> None:
    grace = await clinic.patient("Grace")
    refused = await clinic.staff_book(
        grace,
        "prp-hair",
        TUESDAY,
        consultation_override={"reason": "had one at the old clinic"},
    )
    assert refused.status == 403, refused.body
    assert "clinician" in refused.body["detail"]
    assert await _booked_count(clinic) == 0


async def test_a_clinician_override_books_the_course_and_the_reason_is_logged_and_shown(
    clinic: Clinic,
) -> None:
    grace = await clinic.patient("Grace")
    reason = "consulted at our sister clinic on 12 February; notes scanned"
    booked = await clinic.staff_book(
        grace,
        "prp-hair",
        TUESDAY,
        role="clinician",
        consultation_override={"reason": reason},
        screening=await clinic.all_no(),
    )
    assert booked.status == 201, booked.body
    series_id = booked.body["series_id"]
    appointment_id = booked.body["appointments"][0]["id"]

    log = await clinic.api.call(
        "GET", "/api/v1/audit", role="admin", params={"patient_id": str(grace)}
    )
    assert log.status == 200, log.body
    overrides = [e for e in log.body["items"] if e["action"] == "consultation.override"]
    assert len(overrides) == 1
    assert overrides[0]["reason"] == reason
    assert overrides[0]["entity"] == "series" and overrides[0]["entity_id"] == series_id
    assert overrides[0]["actor_kind"] == "staff"
    created = next(e for e in log.body["items"] if e["action"] == "booking.create")
    assert created["details"]["consultation"] == {"basis": "override", "override_reason": reason}

    # The appointment's history shows the override to the clinician.
    shown = await clinic.api.call("GET", f"/api/v1/appointments/{appointment_id}", role="clinician")
    assert shown.status == 200
    assert reason in [event["reason"] for event in shown.body["history"]]
    # The front desk sees the booking, not the clinician's reason.
    desk = await clinic.api.call("GET", f"/api/v1/appointments/{appointment_id}", role="front_desk")
    assert desk.status == 200
    assert reason not in str(desk.body)


async def test_later_sessions_of_a_course_are_not_gated_again(clinic: Clinic) -> None:
    grace = await clinic.patient("Grace")
    first = await clinic.staff_book(
        grace,
        "prp-hair",
        TUESDAY,
        role="clinician",
        consultation_override={"reason": "consulted elsewhere"},
        screening=await clinic.all_no(),
    )
    assert first.status == 201, first.body
    # The front desk books session 2 of that course four weeks later, without any override.
    second = await clinic.staff_book(
        grace,
        "prp-hair",
        TUESDAY + timedelta(days=28),
        series_id=first.body["series_id"],
        screening=await clinic.all_no(),
    )
    assert second.status == 201, second.body
    assert second.body["appointments"][0]["position"] == 2


async def _form_booking(clinic: Clinic, *, mobile: str, start: datetime) -> list[str]:
    """The booking form's last step for a mesotherapy course (the patient said they had the
    consultation: `consultation_declared`), through the booking domain; the review reasons."""
    offer = await offers.load_offer(
        clinic.pool, await clinic.treatment("hair-mesotherapy"), public=True
    )
    assert offer is not None
    requests = [SessionRequest(1, start)]
    actor = Actor("patient", None, "booking form")
    async with clinic.pool.acquire() as conn, conn.transaction():
        held = await holds.create_hold(
            conn,
            offer,
            requests,
            token_for=lambda hold_id: holds.hold_token("secret", hold_id),
            now=clinic.now,
            actor=actor,
            request_id=None,
        )
        result = await bookings.book_hold(
            conn,
            held.token,
            intake.PatientForm(
                first_name="Ada",
                last_name="Lovelace",
                mobile=mobile,
                email=None,
                date_of_birth=date(1985, 12, 10),
                allergies="",
                medications="",
                screening={},
            ),
            intake.ConsentAnswers(True, True, False, False),
            now=clinic.now,
            actor=actor,
            request_id=None,
            consultation_declared=True,
            screening_source="public_form",
        )
    return list(result.appointments[0].review_reasons)


async def test_the_forms_declared_consultation_is_flagged_unless_one_is_on_file(
    clinic: Clinic,
) -> None:
    # A new patient's word: booked, and a clinician checks before session 1.
    assert CONSULTATION_CLAIMED in await _form_booking(clinic, mobile="07911 000001", start=TUESDAY)
    # A patient with a consultation on file: nothing to check.
    ada = await clinic.patient(mobile="+447911000002")
    await factories.completed_consultation(
        clinic.pool, clinic_id=clinic.api.clinic_id, patient_id=ada, now=clinic.now
    )
    assert CONSULTATION_CLAIMED not in await _form_booking(
        clinic, mobile="07911 000002", start=TUESDAY + timedelta(hours=1)
    )
