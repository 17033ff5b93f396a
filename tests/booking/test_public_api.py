"""The public booking API end to end over HTTP: clinic, treatments, availability, course
proposal, hold and booking, with local times, time off, unplaceable courses, screening flags
and validation."""

from __future__ import annotations

from datetime import UTC, date, datetime

from shared.store import consents as consent_store
from shared.store import form_differences
from tests import factories
from tests.booking.conftest import CONSENTS, Demo, add_time_off, form, sessions_of

FIRST = "2026-03-03T10:00:00Z"  # Tuesday 10:00 in London (GMT until 29 March)
MESO_DATES = [
    "2026-03-03",
    "2026-03-10",
    "2026-03-17",
    "2026-03-24",
    "2026-04-07",  # British Summer Time from here on: still 10:00 local, 09:00 UTC
    "2026-04-21",
    "2026-05-05",
    "2026-05-19",
]


async def test_clinic_and_treatments_on_offer(demo: Demo) -> None:
    clinic = await demo.call("GET", f"/api/v1/public/clinics/{demo.clinic_id}")
    assert clinic.status == 200
    assert clinic.body["time_zone"] == "Europe/London"
    assert clinic.body["phone"] == "+442079460000"
    assert clinic.body["hold_minutes"] == 10
    assert [p["id"] for p in clinic.body["practitioners"]] == [1, 2]
    treatments = await demo.call("GET", f"/api/v1/public/clinics/{demo.clinic_id}/treatments")
    assert treatments.status == 200
    meso = next(t for t in treatments.body["items"] if t["code"] == "hair-mesotherapy")
    assert meso["is_course"] and meso["sessions_min"] == meso["sessions_max"] == 8
    assert [g["target_days"] for g in meso["gaps"]] == [7, 7, 7, 14, 14, 14, 14]
    assert (await demo.call("GET", "/api/v1/public/clinics/999")).status == 404
    await demo.pool.execute("UPDATE treatment SET public = false WHERE id = $1", demo.prp)
    listed = await demo.call("GET", f"/api/v1/public/clinics/{demo.clinic_id}/treatments")
    assert demo.prp not in [t["id"] for t in listed.body["items"]]


async def test_availability_grouped_by_local_day_with_zone(demo: Demo) -> None:
    reply = await demo.call(
        "GET",
        "/api/v1/public/availability",
        params={
            "treatment_id": demo.mesotherapy,
            "practitioner": "1",
            "from": "2026-03-02",
            "to": "2026-03-31",
        },
    )
    assert reply.status == 200, reply.body
    body = reply.body
    assert body["time_zone"] == "Europe/London" and body["practitioner_id"] == 1
    assert len(body["days"]) == 30
    monday = body["days"][0]
    # Now is 09:00 UTC with 2 h minimum notice: the first start today is 11:00.
    assert monday["weekday"] == "Monday" and monday["slots"][0]["local_time"] == "11:00"
    tuesday = body["days"][1]["slots"]
    assert tuesday[0] == {
        "start": "2026-03-03T09:00:00Z",
        "start_local": "2026-03-03T09:00:00+00:00",
        "local_date": "2026-03-03",
        "local_time": "09:00",
        "practitioner_id": 1,
    }
    after_dst = next(d for d in body["days"] if d["day"] == "2026-03-30")["slots"][0]
    assert after_dst["start"] == "2026-03-30T08:00:00Z" and after_dst["local_time"] == "09:00"
    assert after_dst["start_local"].endswith("+01:00")
    saturday = next(d for d in body["days"] if d["day"] == "2026-03-07")
    assert saturday["slots"] == []  # practitioner 1 does not work on Saturdays
    any_one = await demo.free_starts(demo.mesotherapy, "any", "2026-03-07")
    assert any_one  # practitioner 2 does


async def test_full_public_flow_for_the_mesotherapy_course(demo: Demo) -> None:
    proposal = await demo.propose(demo.mesotherapy, FIRST)
    assert proposal.status == 200, proposal.body
    assert proposal.body["complete"] is True
    sessions = proposal.body["sessions"]
    assert [s["local_date"] for s in sessions] == MESO_DATES
    assert {s["local_time"] for s in sessions} == {"10:00"}
    assert {s["practitioner_id"] for s in sessions} == {1}
    assert sessions[3]["start"] == "2026-03-24T10:00:00Z"
    assert sessions[4]["start"] == "2026-04-07T09:00:00Z"
    assert sessions[4]["start_local"] == "2026-04-07T10:00:00+01:00"
    assert [s["gap_days"] for s in sessions] == [None, 7, 7, 7, 14, 14, 14, 14]

    hold = await demo.hold(demo.mesotherapy, sessions_of(proposal.body))
    assert hold.status == 201, hold.body
    token = hold.body["token"]
    assert hold.body["seconds_left"] == 600
    assert hold.body["expires_at"] == "2026-03-02T09:10:00Z"
    assert [s["status"] for s in hold.body["sessions"]] == ["held"] * 8
    status = await demo.call("GET", "/api/v1/public/hold", headers={"Hold-Token": token})
    assert status.status == 200 and status.body["state"] == "active"
    assert status.body["seconds_left"] == 600
    # Held times are gone from availability at once.
    assert "2026-03-03T10:00:00Z" not in await demo.free_starts(demo.mesotherapy, "1", "2026-03-03")

    booked = await demo.book(token)
    assert booked.status == 201, booked.body
    body = booked.body
    assert body["time_zone"] == "Europe/London" and body["needs_review"] is False
    assert [a["local_date"] for a in body["appointments"]] == MESO_DATES
    assert {a["local_time"] for a in body["appointments"]} == {"10:00"}
    assert [a["position"] for a in body["appointments"]] == list(range(1, 9))
    assert {a["status"] for a in body["appointments"]} == {"booked"}

    rows = await demo.pool.fetch(
        "SELECT status, patient_id, series_id, position FROM appointment ORDER BY position"
    )
    assert len(rows) == 8 and {r["status"] for r in rows} == {"booked"}
    assert {r["series_id"] for r in rows} == {body["series_id"]}
    patient = await demo.pool.fetchrow("SELECT * FROM patient WHERE id = $1", rows[0]["patient_id"])
    assert patient["mobile"] == "+447911123456" and patient["email"] == "ada@example.com"
    planned = await demo.pool.fetchval(
        "SELECT planned_sessions FROM series WHERE id = $1", body["series_id"]
    )
    assert planned == 8
    consents = await demo.pool.fetch(
        "SELECT kind, granted, source, wording_version FROM patient_consent WHERE patient_id = $1",
        patient["id"],
    )
    assert {c["kind"]: c["granted"] for c in consents} == CONSENTS
    assert {c["source"] for c in consents} == {"booking_form"}
    actions = {r["action"] for r in await demo.pool.fetch("SELECT action FROM audit_log")}
    assert {"hold.create", "patient.create", "consent.record", "booking.create"} <= actions
    after = await demo.call("GET", "/api/v1/public/hold", headers={"Hold-Token": token})
    assert after.body["state"] == "booked" and len(after.body["sessions"]) == 8


async def test_later_sessions_colliding_with_time_off_are_moved_and_booked(demo: Demo) -> None:
    # Practitioner 1 is away on Tuesday 24 March, the target day of session 4.
    await add_time_off(
        demo.pool, 1, datetime(2026, 3, 24, tzinfo=UTC), datetime(2026, 3, 25, tzinfo=UTC)
    )
    proposal = await demo.propose(demo.mesotherapy, FIRST)
    assert proposal.body["complete"] is True
    fourth = proposal.body["sessions"][3]
    assert fourth["local_date"] == "2026-03-25" and fourth["practitioner_id"] == 1
    assert fourth["local_time"] == "10:00" and fourth["gap_days"] == 8
    assert "gap_not_target" in fourth["flags"]
    assert any("time off" in reason for reason in fourth["reasons"])
    # The fortnightly rhythm continues from the moved session.
    assert proposal.body["sessions"][4]["local_date"] == "2026-04-08"

    hold = await demo.hold(demo.mesotherapy, sessions_of(proposal.body))
    assert hold.status == 201, hold.body
    booked = await demo.book(hold.body["token"])
    assert booked.status == 201, booked.body
    dates = [a["local_date"] for a in booked.body["appointments"]]
    assert dates[3] == "2026-03-25" and "2026-03-24" not in dates


async def test_course_that_cannot_be_placed_names_the_position_and_books_nothing(
    demo: Demo,
) -> None:
    # Everyone is away for three weeks: session 5 (12 to 21 days after 24 March) has no slot.
    for practitioner in (1, 2):
        await add_time_off(
            demo.pool,
            practitioner,
            datetime(2026, 3, 30, tzinfo=UTC),
            datetime(2026, 4, 20, tzinfo=UTC),
        )
    proposal = await demo.propose(demo.mesotherapy, FIRST)
    assert proposal.status == 200
    assert proposal.body["complete"] is False and proposal.body["failed_position"] == 5
    assert proposal.body["failure"].startswith("session 5: no free slot between 2026-04-05")
    assert len(proposal.body["sessions"]) == 4

    # A form that insists on a time inside the time off: nothing is held.
    wanted = sessions_of(proposal.body) + [
        {"practitioner_id": 1, "start": f"2026-{day}T09:00:00Z"}
        for day in ("04-07", "04-21", "05-05", "05-19")
    ]
    hold = await demo.hold(demo.mesotherapy, wanted)
    assert hold.status == 409, hold.body
    assert [c["position"] for c in hold.body["conflicts"]] == [5]
    assert "time off" in hold.body["conflicts"][0]["reason"]
    assert hold.body["alternatives_for_position"] == 5

    patient = await demo.patient()
    staff = await demo.call(
        "POST",
        "/api/v1/bookings",
        role="front_desk",
        json={
            "patient_id": patient,
            "treatment_id": demo.mesotherapy,
            "practitioner_id": 1,
            "start": FIRST,
        },
    )
    assert staff.status == 409, staff.body
    assert staff.body["type"].endswith("course-not-placeable")
    assert staff.body["failed_position"] == 5 and "session 5" in staff.body["detail"]
    assert await demo.pool.fetchval("SELECT count(*) FROM appointment") == 0
    assert await demo.pool.fetchval("SELECT count(*) FROM series") == 0


async def test_positive_screening_flags_the_sessions_for_review(demo: Demo) -> None:
    hold = await demo.hold(demo.consultation, [{"practitioner_id": 2, "start": FIRST}])
    patient = form(screening={"blood_thinners": True, "pregnant": False, "isotretinoin": "no"})
    booked = await demo.book(hold.body["token"], patient)
    assert booked.status == 201, booked.body
    assert booked.body["needs_review"] is True and booked.body["series_id"] is None
    reasons = await demo.pool.fetchval("SELECT review_reasons FROM appointment")
    assert reasons == ["screening: 'blood_thinners' answered positive"]


async def test_negative_screening_is_not_flagged(demo: Demo) -> None:
    hold = await demo.hold(demo.consultation, [{"practitioner_id": 2, "start": FIRST}])
    booked = await demo.book(hold.body["token"])
    assert booked.status == 201 and booked.body["needs_review"] is False


async def test_a_stranger_with_a_known_mobile_books_but_changes_and_learns_nothing(
    demo: Demo,
) -> None:
    """Someone who knows Ada's mobile books with it, typing another name, their own email,
    allergies and consents: the sessions are Ada's, her record and consents are untouched, what
    they typed waits for staff, and the answer says nothing about her."""
    known = await factories.patient(
        demo.pool,
        clinic_id=demo.clinic_id,
        first_name="Ada",
        last_name="King",
        mobile="+447911123456",
        date_of_birth=date(1985, 12, 10),
        now=demo.api.clock.now(),
    )
    await factories.consent(
        demo.pool, known, {"care_sms": True}, source="staff", now=demo.api.clock.now()
    )
    before = await demo.pool.fetchrow("SELECT * FROM patient WHERE id = $1", known)
    hold = await demo.hold(demo.consultation, [{"practitioner_id": 1, "start": FIRST}])
    stranger = form(last_name="Lovelace", email="stranger@example.com", allergies="penicillin")
    reply = await demo.call(
        "POST",
        "/api/v1/public/bookings",
        json={
            "hold_token": hold.body["token"],
            "patient": stranger,
            "consents": {**CONSENTS, "care_sms": False, "marketing_email": True},
        },
    )
    assert reply.status == 201, reply.body
    # Nothing about Ada in the answer: no link, and no review flag that only comparing her
    # record could raise (the allergy typed in the form is the submitter's own answer).
    assert "link" not in str(reply.body).lower()
    assert reply.body["needs_review"] is True  # from the typed allergy alone
    after = await demo.pool.fetchrow("SELECT * FROM patient WHERE id = $1", known)
    assert dict(after) == dict(before)  # not one column changed: no blank email filled in
    consents = await consent_store.current(demo.pool, known)
    assert set(consents) == {"care_sms"} and consents["care_sms"].granted
    assert await demo.pool.fetchval("SELECT count(*) FROM patient") == 1
    appointment = await demo.pool.fetchrow("SELECT * FROM appointment")
    assert appointment["patient_id"] == known and appointment["needs_review"]
    assert any("last_name" in reason for reason in appointment["review_reasons"])
    # What was typed is kept for staff, outside the append-only history and audit log.
    waiting = await form_differences.for_patient(demo.pool, known)
    assert len(waiting) == 1
    assert waiting[0].submitted == {
        "last_name": "Lovelace",
        "email": "stranger@example.com",
        "allergies": "penicillin",
        "consents": {"care_sms": False, "care_email": True, "marketing_email": True},
    }
    assert waiting[0].appointment_ids == [appointment["id"]]
    history = await demo.pool.fetch("SELECT details FROM appointment_event")
    audit_rows = await demo.pool.fetch("SELECT details FROM audit_log")
    for row in [*history, *audit_rows]:
        assert "stranger@example.com" not in str(row["details"])
        assert "Lovelace" not in str(row["details"])


async def test_a_patient_booking_again_with_the_same_details_is_not_flagged(demo: Demo) -> None:
    first = await demo.hold(demo.consultation, [{"practitioner_id": 1, "start": FIRST}])
    assert (await demo.book(first.body["token"])).status == 201
    later = await demo.hold(
        demo.consultation, [{"practitioner_id": 1, "start": "2026-03-10T10:00:00Z"}]
    )
    again = await demo.book(later.body["token"])
    assert again.status == 201 and again.body["needs_review"] is False
    assert await demo.pool.fetchval("SELECT count(*) FROM patient") == 1
    assert await demo.pool.fetchval("SELECT count(*) FROM form_difference") == 0


async def test_bad_input_is_422_naming_the_path_never_500(demo: Demo) -> None:
    hold = await demo.hold(demo.consultation, [{"practitioner_id": 1, "start": FIRST}])
    token = hold.body["token"]

    async def booking_paths(patient: dict, consents: dict | None = None) -> list[str]:
        reply = await demo.call(
            "POST",
            "/api/v1/public/bookings",
            json={"hold_token": token, "patient": patient, "consents": consents or CONSENTS},
        )
        assert reply.status == 422, reply.body
        return [e["path"] for e in reply.body["errors"]]

    assert await booking_paths(form(mobile="12345")) == ["patient.mobile"]
    assert await booking_paths(form(mobile="020 7946 0000")) == ["patient.mobile"]  # landline
    assert await booking_paths(form(email="not-an-email")) == ["patient.email"]
    assert await booking_paths(form(date_of_birth="2030-01-01")) == ["patient.date_of_birth"]
    assert await booking_paths(form(first_name="  ")) == ["patient.first_name"]
    assert await booking_paths(form(first_name="A\x00")) == ["patient.first_name"]
    assert await booking_paths(form(allergies="x\x00")) == ["patient.allergies"]
    assert await booking_paths(form(nickname="Ada")) == ["patient.nickname"]
    screening = await booking_paths(form(screening={"Bad Key": True}))
    assert screening[0].startswith("patient.screening")
    missing = {k: v for k, v in CONSENTS.items() if k != "care_sms"}
    assert await booking_paths(form(), missing) == ["consents.care_sms"]
    assert await booking_paths(form(), {**CONSENTS, "care_sms": "yes"}) == ["consents.care_sms"]

    async def hold_paths(body: dict) -> list[str]:
        reply = await demo.call("POST", "/api/v1/public/holds", json=body)
        assert reply.status == 422, reply.body
        return [e["path"] for e in reply.body["errors"]]

    one = {"practitioner_id": 1, "start": "2026-03-04T10:00:00Z"}
    assert await hold_paths(
        {"treatment_id": demo.consultation, "sessions": [{**one, "start": "2026-03-04T10:00"}]}
    ) == ["sessions.0.start"]
    assert await hold_paths(
        {"treatment_id": demo.consultation, "sessions": [{**one, "start": "0001-01-01T00:00Z"}]}
    ) == ["sessions.0.start"]
    assert await hold_paths({"treatment_id": 10**30, "sessions": [one]}) == ["treatment_id"]
    assert await hold_paths({"treatment_id": 999, "sessions": [one]}) == ["treatment_id"]
    assert await hold_paths(
        {"treatment_id": demo.consultation, "sessions": [{**one, "practitioner_id": 99}]}
    ) == ["sessions.0.practitioner_id"]
    # Three sessions of an eight-session course: neither the course nor its first session alone.
    three = [{"practitioner_id": 1, "start": f"2026-03-{day:02d}T10:00:00Z"} for day in (3, 10, 17)]
    assert await hold_paths({"treatment_id": demo.mesotherapy, "sessions": three}) == ["sessions"]
    weekly = [
        {"practitioner_id": 1, "start": f"2026-03-{day:02d}T10:00:00Z"} for day in (3, 8, 17, 24)
    ]  # 5 days between the first two: under the hard minimum of 6
    eight = weekly + [
        {"practitioner_id": 1, "start": f"2026-{m}T09:00:00Z"}
        for m in ("04-07", "04-21", "05-05", "05-19")
    ]
    assert await hold_paths({"treatment_id": demo.mesotherapy, "sessions": eight}) == [
        "sessions.1.start"
    ]

    async def query_paths(path: str, params: dict) -> list[str]:
        reply = await demo.call("GET", path, params=params)
        assert reply.status == 422, reply.body
        return [e["path"] for e in reply.body["errors"]]

    span = {"treatment_id": demo.consultation, "from": "2026-03-02", "to": "2026-04-30"}
    assert await query_paths("/api/v1/public/availability", span) == ["to"]
    backwards = {**span, "to": "2026-03-01"}
    assert await query_paths("/api/v1/public/availability", backwards) == ["to"]
    assert await query_paths(
        "/api/v1/public/availability", {**span, "to": "2026-03-03", "practitioner": "x"}
    ) == ["practitioner"]
    assert await query_paths(
        "/api/v1/public/availability", {**span, "to": "2026-03-03", "practitioner": "9"}
    ) == ["practitioner"]
    assert await query_paths(
        "/api/v1/public/course-proposal",
        {"treatment_id": demo.mesotherapy, "practitioner_id": 1, "first_start": "tomorrow"},
    ) == ["first_start"]
    assert await query_paths(
        "/api/v1/public/course-proposal",
        {"treatment_id": demo.mesotherapy, "practitioner_id": 7, "first_start": FIRST},
    ) == ["practitioner_id"]
    short = await demo.call("GET", "/api/v1/public/hold", headers={"Hold-Token": "short"})
    assert short.status == 422 and [e["path"] for e in short.body["errors"]] == ["Hold-Token"]
    # A token in the query string is not read at all: the header is required.
    in_url = await demo.call("GET", "/api/v1/public/hold", params={"token": "hold_" + "x" * 43})
    assert in_url.status == 422
    assert [(e["in"], e["path"]) for e in in_url.body["errors"]] == [("header", "Hold-Token")]

    not_json = await demo.call(
        "POST", "/api/v1/public/holds", headers={"Content-Type": "application/json"}
    )
    assert not_json.status == 400
    far = await demo.call(
        "GET",
        "/api/v1/public/availability",
        params={"treatment_id": demo.consultation, "from": "2999-12-01", "to": "2999-12-31"},
    )
    assert far.status == 200 and all(not d["slots"] for d in far.body["days"])
    beyond = await demo.propose(demo.mesotherapy, "2999-12-31T10:00:00Z")
    assert beyond.status == 200 and beyond.body["failed_position"] == 1
    assert "horizon" in beyond.body["failure"]


async def test_a_course_can_be_booked_one_session_at_a_time(demo: Demo) -> None:
    """The first session alone: a course of the treatment's length with one session booked, so
    the scheduler proposes each next one after the session before it is completed."""
    proposal = await demo.call(
        "GET",
        "/api/v1/public/course-proposal",
        params={
            "treatment_id": demo.prp,
            "practitioner_id": 1,
            "first_start": FIRST,
            "sessions": 1,
        },
    )
    assert proposal.status == 200, proposal.body
    assert [s["position"] for s in proposal.body["sessions"]] == [1]

    hold = await demo.hold(demo.prp, sessions_of(proposal.body))
    assert hold.status == 201, hold.body
    booked = await demo.book(hold.body["token"])

    assert booked.status == 201, booked.body
    assert [a["position"] for a in booked.body["appointments"]] == [1]
    planned = await demo.pool.fetchval(
        "SELECT planned_sessions FROM series WHERE id = $1", booked.body["series_id"]
    )
    assert planned == 4  # PRP: four sessions, three still to book
    # Two sessions of a four-session course is neither the course nor its first session.
    second = "2026-03-31T09:00:00Z"
    two = [
        {"practitioner_id": 1, "start": "2026-03-10T10:00:00Z"},
        {"practitioner_id": 1, "start": second},
    ]
    refused = await demo.hold(demo.prp, two)
    assert refused.status == 422 and refused.body["errors"][0]["path"] == "sessions"
