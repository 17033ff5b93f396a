"""Screening as real yes/no answers: the clinic's questions (seeded, editable), staff bookings
with and without answers, and the re-confirmation at check-in, where a new yes waits for a
clinician."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.safety.conftest import Clinic

# The clock is Monday 2 March 2026 09:00 UTC; bookings need 2 h notice, and check-in opens 2 h
# before the start: tests book SOON, then move the clock an hour (`open_check_in`).
SOON = datetime(2026, 3, 2, 11, 30, tzinfo=UTC)
DEFAULT_CODES = [
    "allergy",
    "blood_thinners_or_nsaids",
    "bleeding_disorder",
    "pregnant_or_breastfeeding",
    "scalp_infection_or_fever",
    "immunosuppressed",
    "keloid_history",
    "isotretinoin",
]


def open_check_in(clinic: Clinic) -> None:
    clinic.api.clock.advance(timedelta(hours=1))


async def _answers(clinic: Clinic, patient_id: int) -> list[dict[str, object]]:
    rows = await clinic.pool.fetch(
        "SELECT appointment_id, question_code, answer, details, source FROM screening_answer "
        "WHERE patient_id = $1 ORDER BY id",
        patient_id,
    )
    return [dict(r) for r in rows]


async def test_each_clinic_has_the_default_questions_and_admins_edit_them(clinic: Clinic) -> None:
    path = f"/api/v1/clinics/{clinic.api.clinic_id}/screening-questions"
    listed = await clinic.api.call("GET", path, role="front_desk")
    assert listed.status == 200, listed.body
    assert [q["code"] for q in listed.body["items"]] == DEFAULT_CODES
    keloid = next(q for q in listed.body["items"] if q["code"] == "keloid_history")
    assert keloid["applies_to"] == ["scalp-microneedling"]
    lidocaine = listed.body["items"][0]["wording"]
    assert "lidocaine" in lidocaine and "vitamins" in lidocaine

    change = {"wording": "Do you take aspirin, ibuprofen or any blood thinner?"}
    url = f"/api/v1/screening-questions/{listed.body['items'][1]['id']}"
    assert (await clinic.api.call("PATCH", url, role="front_desk", json=change)).status == 403
    changed = await clinic.api.call("PATCH", url, role="admin", json=change)
    assert changed.status == 200, changed.body
    assert changed.body["wording"] == change["wording"]
    assert changed.body["code"] == "blood_thinners_or_nsaids"

    added = await clinic.api.call(
        "POST", path, role="admin", json={"code": "hair_dye_recent", "wording": "Dyed lately?"}
    )
    assert added.status == 201, added.body
    twice = await clinic.api.call(
        "POST", path, role="admin", json={"code": "hair_dye_recent", "wording": "Again?"}
    )
    assert twice.status == 409

    # A clinic made through the admin API starts with the defaults too.
    made = await clinic.api.call(
        "POST",
        "/api/v1/clinics",
        role="admin",
        json={
            "name": "Second Clinic",
            "time_zone": "Europe/Dublin",
            "phone": "+35312345678",
            "address": "1 Main Street, Dublin",
            "region": "IE",
        },
    )
    assert made.status == 201, made.body
    theirs = await clinic.api.call(
        "GET", f"/api/v1/clinics/{made.body['id']}/screening-questions", role="admin"
    )
    assert [q["code"] for q in theirs.body["items"]] == DEFAULT_CODES


async def test_a_staff_booking_without_screening_answers_is_flagged_for_review(
    clinic: Clinic,
) -> None:
    grace = await clinic.patient("Grace")
    booked = await clinic.staff_book(grace, "consultation", SOON)
    assert booked.status == 201, booked.body
    assert booked.body["needs_review"] is True
    appointment_id = booked.body["appointments"][0]["id"]
    reasons = await clinic.pool.fetchval(
        "SELECT review_reasons FROM appointment WHERE id = $1", appointment_id
    )
    assert reasons == ["screening not answered"]
    # The flag holds check-in until a clinician has looked, even with the answers given now.
    open_check_in(clinic)
    refused = await clinic.act(
        appointment_id, "check-in", json={"screening": await clinic.all_no()}
    )
    assert refused.status == 409 and refused.body["type"].endswith("/needs-review")


async def test_a_staff_booking_with_every_answer_no_is_not_flagged_and_stores_them(
    clinic: Clinic,
) -> None:
    grace = await clinic.patient("Grace")
    booked = await clinic.staff_book(grace, "consultation", SOON, screening=await clinic.all_no())
    assert booked.status == 201, booked.body
    assert booked.body["needs_review"] is False
    stored = await _answers(clinic, grace)
    assert {a["question_code"] for a in stored} == set(DEFAULT_CODES)
    assert {a["source"] for a in stored} == {"staff"}
    assert {a["appointment_id"] for a in stored} == {booked.body["appointments"][0]["id"]}


async def test_a_staff_booking_with_some_answers_missing_or_unknown_is_refused(
    clinic: Clinic,
) -> None:
    grace = await clinic.patient("Grace")
    partial = {"allergy": False, "bleeding_disorder": False}
    refused = await clinic.staff_book(grace, "consultation", SOON, screening=partial)
    assert refused.status == 422, refused.body
    assert refused.body["errors"][0]["path"] == "screening"
    assert "isotretinoin" in refused.body["detail"]
    unknown = {**await clinic.all_no(), "favourite_colour": False}
    refused = await clinic.staff_book(grace, "consultation", SOON, screening=unknown)
    assert refused.status == 422, refused.body
    assert refused.body["errors"][0]["path"] == "screening.favourite_colour"
    assert await _answers(clinic, grace) == []


async def test_check_in_needs_the_screening_re_confirmed_for_the_session(clinic: Clinic) -> None:
    grace = await clinic.patient("Grace")
    booked = await clinic.staff_book(grace, "consultation", SOON, screening=await clinic.all_no())
    appointment_id = booked.body["appointments"][0]["id"]
    # Booked with answers today: re-confirmed within the week, check-in needs no body.
    open_check_in(clinic)
    assert (await clinic.act(appointment_id, "check-in")).status == 200

    later = await clinic.staff_book(
        grace, "consultation", SOON + timedelta(days=8), screening=await clinic.all_no()
    )
    later_id = later.body["appointments"][0]["id"]
    clinic.api.clock.advance(timedelta(days=8))  # the booking's answers are 8 days old now
    missing = await clinic.act(later_id, "check-in")
    assert missing.status == 409, missing.body
    assert missing.body["type"].endswith("/screening-not-confirmed")
    assert [m["code"] for m in missing.body["missing"]] == [
        c
        for c in DEFAULT_CODES
        if c != "keloid_history"  # asked for microneedling only
    ]
    some = {"allergy": False, "bleeding_disorder": False}
    partly = await clinic.act(later_id, "check-in", json={"screening": some})
    assert partly.status == 409
    assert "allergy" not in [m["code"] for m in partly.body["missing"]]

    answers = {c: False for c in DEFAULT_CODES if c != "keloid_history"}
    checked_in = await clinic.act(later_id, "check-in", json={"screening": answers})
    assert checked_in.status == 200, checked_in.body
    assert checked_in.body["status"] == "checked_in"
    at_check_in = [a for a in await _answers(clinic, grace) if a["source"] == "check_in"]
    assert {a["question_code"] for a in at_check_in} == set(answers)
    assert {a["appointment_id"] for a in at_check_in} == {later_id}


async def test_a_new_yes_at_check_in_flags_the_session_until_a_clinician_reviews_it(
    clinic: Clinic,
) -> None:
    grace = await clinic.patient("Grace")
    booked = await clinic.staff_book(grace, "consultation", SOON, screening=await clinic.all_no())
    appointment_id = booked.body["appointments"][0]["id"]
    open_check_in(clinic)
    answers = {**await clinic.all_no(), "blood_thinners_or_nsaids": True}
    refused = await clinic.act(
        appointment_id,
        "check-in",
        json={"screening": answers, "screening_details": {"blood_thinners_or_nsaids": "aspirin"}},
    )
    assert refused.status == 409, refused.body
    assert refused.body["type"].endswith("/needs-review")
    row = await clinic.pool.fetchrow(
        "SELECT status, needs_review, review_reasons FROM appointment WHERE id = $1",
        appointment_id,
    )
    assert row["status"] == "booked" and row["needs_review"]
    assert any("blood_thinners_or_nsaids" in r for r in row["review_reasons"])
    # The clinician's review queue shows the session.
    queue = await clinic.api.call("GET", "/api/v1/review-queue", role="clinician")
    assert queue.status == 200, queue.body
    queued = [a["id"] for group in queue.body["items"] for a in group["appointments"]]
    assert queued == [appointment_id]
    # The answer was kept although check-in was refused.
    yes = [a for a in await _answers(clinic, grace) if a["answer"]]
    assert yes == [
        {
            "appointment_id": appointment_id,
            "question_code": "blood_thinners_or_nsaids",
            "answer": True,
            "details": "aspirin",
            "source": "check_in",
        }
    ]
    assert (await clinic.act(appointment_id, "check-in", json={"screening": answers})).status == 409

    reviewed = await clinic.act(
        appointment_id, "review", role="clinician", json={"note": "aspirin 75 mg: fine for this"}
    )
    assert reviewed.status == 200, reviewed.body
    # The same yes again is not new: the reviewed session checks in.
    checked_in = await clinic.act(appointment_id, "check-in", json={"screening": answers})
    assert checked_in.status == 200, checked_in.body


async def test_the_front_desk_sees_that_a_review_is_pending_but_not_the_answer(
    clinic: Clinic,
) -> None:
    grace = await clinic.patient("Grace")
    booked = await clinic.staff_book(grace, "consultation", SOON, screening=await clinic.all_no())
    appointment_id = booked.body["appointments"][0]["id"]
    open_check_in(clinic)
    answers = {**await clinic.all_no(), "pregnant_or_breastfeeding": True}
    refused = await clinic.act(appointment_id, "check-in", json={"screening": answers})
    assert refused.status == 409
    assert "pregnant" not in str(refused.body)


async def test_clinicians_read_a_patients_answers_and_the_front_desk_cannot(
    clinic: Clinic,
) -> None:
    grace = await clinic.patient("Grace")
    await clinic.staff_book(grace, "consultation", SOON, screening=await clinic.all_no())
    path = f"/api/v1/patients/{grace}/screening-answers"
    assert (await clinic.api.call("GET", path, role="front_desk")).status == 403
    read = await clinic.api.call("GET", path, role="clinician")
    assert read.status == 200, read.body
    assert {a["question_code"] for a in read.body["items"]} == set(DEFAULT_CODES)
    assert all(a["answer"] is False and a["source"] == "staff" for a in read.body["items"])


async def test_a_clinicians_edit_of_the_record_is_an_answer_and_check_in_answers_update_it(
    clinic: Clinic,
) -> None:
    grace = await clinic.patient("Grace")
    path = f"/api/v1/patients/{grace}"
    read = await clinic.api.call("GET", path, role="clinician")
    edited = await clinic.api.call(
        "PATCH",
        path,
        role="clinician",
        json={"screening": {"allergy": True, "details": "penicillin"}},
        headers={"If-Match": read.headers["ETag"]},
    )
    assert edited.status == 200, edited.body
    assert await _answers(clinic, grace) == [
        {
            "appointment_id": None,
            "question_code": "allergy",
            "answer": True,
            "details": "penicillin",
            "source": "staff",
        }
    ]
    # Known and entered by a clinician: a yes at check-in is not new, and does not flag.
    answers = {**await clinic.all_no(), "allergy": True, "isotretinoin": False}
    booked = await clinic.staff_book(grace, "consultation", SOON, screening=answers)
    assert booked.status == 201, booked.body
    assert booked.body["needs_review"] is False
    # The record shows the newest answers.
    record = await clinic.api.call("GET", path, role="clinician")
    assert record.body["screening"]["allergy"] is True
    assert record.body["screening"]["isotretinoin"] is False
