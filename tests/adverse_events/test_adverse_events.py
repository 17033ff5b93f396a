"""Adverse events: opening one (each tier), the call list for routine ones, the clinician's
grade and clearance, the next-session guard at check-in, the list, CSV export, history that
cannot be rewritten, erasure that keeps them, the front desk's limits and stale edits.

Real PostgreSQL and HTTP; the clock is moved, never slept on."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.scheduler.courses import file_overdue_gaps
from services.scheduler.proposals import propose_next_sessions
from shared.db.transactions import in_transaction
from shared.domain import adverse_events as domain
from shared.domain.appointment_changes import Change
from shared.store import audit
from shared.store.adverse_events import AdverseEvent
from tests import factories
from tests.appointments.conftest import HART, Desk, london
from tests.conftest import Reply

MONDAY = date(2026, 3, 2)  # the frozen clock's day
FRIDAY = date(2026, 3, 6)
BASE = "/api/v1/adverse-events"


async def report(desk: Desk, **fields: Any) -> AdverseEvent:
    """report() as the check-in and SMS paths call it, in its own transaction."""
    values: dict[str, Any] = {
        "clinic_id": desk.api.clinic_id,
        "patient_id": desk.patient_id,
        "appointment_id": None,
        "symptoms": "swelling at the injection site",
        "source": "check_in",
        **fields,
    }
    change = Change(audit.SYSTEM, desk.api.clock.now())

    async def work(conn: asyncpg.Connection) -> AdverseEvent:
        return await domain.report(conn, change=change, **values)

    return await in_transaction(desk.pool, work)


async def post(desk: Desk, path: str, role: str, json: Any, version: int | None = None) -> Reply:
    headers = {} if version is None else {"If-Match": f'"{version}"'}
    return await desk.api.call("POST", BASE + path, role=role, json=json, headers=headers)


async def event_version(desk: Desk, event_id: int) -> int:
    return int(
        await desk.pool.fetchval("SELECT version FROM adverse_event WHERE id = $1", event_id)
    )


async def messages(desk: Desk, kind: str) -> list[asyncpg.Record]:
    return await desk.pool.fetch(
        "SELECT channel, patient_id, context FROM notification WHERE kind = $1 ORDER BY id", kind
    )


async def with_care_sms(desk: Desk) -> None:
    await factories.consent(
        desk.pool, desk.patient_id, {"care_sms": True}, now=desk.api.clock.now()
    )


# -- report() --------------------------------------------------------------------------------------


async def test_each_tier_opens_an_event_with_its_first_history_entry(desk: Desk) -> None:
    await with_care_sms(desk)
    _, (done, upcoming) = await desk.course(
        [london(MONDAY, 8), london(date(2026, 3, 9), 10)], statuses=["completed", "booked"]
    )
    routine = await report(desk, tier="routine", appointment_id=done, lot_number="LOT-7")
    urgent = await report(desk, tier="urgent", appointment_id=done)
    assert (routine.status, routine.seriousness, routine.lot_number) == (
        "open",
        "not_serious",
        "LOT-7",
    )
    # An urgent answer may be serious until a clinician has looked; it does not hold yet.
    assert urgent.seriousness == "possibly_serious" and not urgent.holds_next_session
    detail = await desk.read(upcoming, role="clinician")
    assert detail.body["needs_review"] is False

    emergency = await report(desk, tier="emergency", appointment_id=done, source="sms")
    assert emergency.seriousness == "possibly_serious" and emergency.holds_next_session
    assert emergency.hold_started_at == desk.api.clock.now()
    # The next booked session is flagged with a reason naming the event, and the patient is
    # asked to call (by SMS: their consent), without a word about the reaction.
    detail = await desk.read(upcoming, role="clinician")
    assert detail.body["needs_review"] is True
    assert detail.body["review_reasons"] == [domain.hold_reason(emergency.id)]
    told = await messages(desk, domain.CALL_BEFORE_NEXT_VISIT)
    assert [(m["channel"], m["patient_id"]) for m in told] == [("sms", desk.patient_id)]

    reply = await desk.api.call("GET", f"{BASE}/{emergency.id}", role="clinician")
    assert reply.status == 200, reply.body
    actions = [h["action"] for h in reply.body["history"]]
    assert actions == ["open", "hold"]
    opened = {c["field"]: c["to"] for c in reply.body["history"][0]["changes"]}
    assert opened["tier"] == "emergency" and opened["status"] == "open"
    for event in (routine, urgent, emergency):
        assert len(await desk.audit("adverse_event.open", event.id)) == 1


async def test_a_routine_report_on_friday_is_on_the_call_list_for_monday(desk: Desk) -> None:
    desk.api.clock.set(london(FRIDAY, 17))
    event = await report(desk, tier="routine")
    reply = await desk.api.call("GET", "/api/v1/call-list", role="front_desk")
    assert reply.status == 200, reply.body
    (task,) = [t for t in reply.body["items"] if t["reason"] == "adverse_event_routine"]
    assert task["patient"]["id"] == desk.patient_id
    assert "2026-03-09" in task["detail"] and "swelling" not in task["detail"]
    row = await desk.pool.fetchrow(
        "SELECT due_at, adverse_event_id FROM call_task WHERE id = $1", task["id"]
    )
    assert row["adverse_event_id"] == event.id
    assert row["due_at"] == london(date(2026, 3, 9), 9)  # Monday 09:00 in the clinic's zone
    # Urgent and emergency events are alerted (another part), not put on the routine list.
    await report(desk, tier="urgent")
    count = await desk.pool.fetchval(
        "SELECT count(*) FROM call_task WHERE reason = 'adverse_event_routine'"
    )
    assert count == 1


async def test_a_patient_no_message_can_reach_is_put_on_the_call_list_instead(desk: Desk) -> None:
    silent = await desk.new_patient()  # no mobile, no email
    event = await report(desk, tier="emergency", patient_id=silent)
    assert await messages(desk, domain.CALL_BEFORE_NEXT_VISIT) == []
    reason = await desk.pool.fetchval(
        "SELECT reason FROM call_task WHERE adverse_event_id = $1", event.id
    )
    assert reason == "adverse_event_hold"


# -- the next-session guard ------------------------------------------------------------------------


async def test_grade_3_blocks_check_in_until_a_clinician_clears_it(desk: Desk) -> None:
    await with_care_sms(desk)
    next_start = london(date(2026, 3, 9), 10)
    _, (done, upcoming) = await desk.course(
        [london(MONDAY, 8), next_start], statuses=["completed", "booked"]
    )
    # The patient phones; the desk opens the event, the clinician grades it severe.
    opened = await post(
        desk,
        "",
        "front_desk",
        {
            "clinic_id": desk.api.clinic_id,
            "patient_id": desk.patient_id,
            "appointment_id": done,
            "symptoms": "hard painful lump, spreading redness",
            "tier": "urgent",
        },
    )
    assert opened.status == 201, opened.body
    event_id = opened.body["id"]
    assert opened.headers["Location"] == f"{BASE}/{event_id}"
    graded = await post(
        desk,
        f"/{event_id}/assess",
        "clinician",
        {"grade": 3, "seriousness": "serious", "reason": "abscess on examination"},
        opened.body["version"],
    )
    assert graded.status == 200, graded.body
    assert graded.body["holds_next_session"] is True and graded.body["grade_name"] == "severe"
    assert (await desk.read(upcoming)).body["needs_review"] is True
    assert len(await messages(desk, domain.CALL_BEFORE_NEXT_VISIT)) == 1

    desk.api.clock.set(next_start - timedelta(minutes=10))
    refused = await desk.act(upcoming, "check-in")
    assert refused.status == 409, refused.body
    assert refused.body["type"].endswith("/adverse-event-hold")
    assert refused.body["adverse_event_ids"] == [event_id]
    assert f"adverse event {event_id}" in refused.body["detail"]
    assert "lump" not in str(refused.body)  # the desk is not told the symptoms
    assert await desk.status(upcoming) == "booked"

    clear = {"reason": "seen in clinic: drained, healing, fine to treat the other side"}
    version = graded.body["version"]
    assert (await post(desk, f"/{event_id}/clear", "front_desk", clear, version)).status == 403
    assert (await post(desk, f"/{event_id}/clear", "admin", clear, version)).status == 403
    cleared = await post(desk, f"/{event_id}/clear", "clinician", clear, version)
    assert cleared.status == 200, cleared.body
    assert cleared.body["holds_next_session"] is False
    assert cleared.body["clearance_reason"] == clear["reason"]
    # The flag the event raised goes with it; check-in goes ahead.
    after = await desk.read(upcoming)
    assert after.body["needs_review"] is False
    allowed = await desk.act(upcoming, "check-in")
    assert allowed.status == 200, allowed.body

    history = cleared.body["history"]
    assert [h["action"] for h in history] == ["open", "assess", "hold", "clear"]
    assert history[1]["reason"] == "abscess on examination"
    assert {"field": "grade", "from": None, "to": 3} in history[1]["changes"]
    assert history[-1]["reason"] == clear["reason"] and history[-1]["actor"].startswith("staff:")
    logged = await desk.audit("adverse_event.clear", event_id)
    assert logged and logged[0]["reason"] == clear["reason"]


async def test_an_emergency_holds_the_next_session_even_when_resolved(desk: Desk) -> None:
    start = london(date(2026, 3, 3), 10)
    upcoming = await desk.appointment(start)
    event = await report(desk, tier="emergency")
    resolved = await post(
        desk, f"/{event.id}/resolve", "clinician", {"notes": "settled in A&E"}, event.version
    )
    assert resolved.status == 200 and resolved.body["status"] == "resolved"
    desk.api.clock.set(start - timedelta(minutes=5))
    refused = await desk.act(upcoming, "check-in")
    assert refused.status == 409 and refused.body["type"].endswith("/adverse-event-hold")
    # A graded event below 3 holds nothing: there is nothing to clear.
    mild = await report(desk, tier="routine")
    graded = await post(
        desk, f"/{mild.id}/assess", "clinician", {"grade": 2, "reason": "bruise"}, mild.version
    )
    nothing = await post(
        desk, f"/{mild.id}/clear", "clinician", {"reason": "n/a"}, graded.body["version"]
    )
    assert nothing.status == 409 and nothing.body["type"].endswith("/nothing-to-clear")


# -- gap rules -------------------------------------------------------------------------------------


async def test_a_delay_caused_by_an_event_hold_is_clinician_approved(desk: Desk) -> None:
    series_id, (done,) = await desk.course([london(MONDAY, 8)], statuses=["completed"])
    event = await report(desk, tier="emergency", appointment_id=done)
    # Three weeks on, session 2 is far past its 10-day maximum: no gap_overdue call for it.
    desk.api.clock.set(london(date(2026, 3, 25), 9))
    await file_overdue_gaps(desk.pool, desk.api.clock)
    filed = await desk.pool.fetchval("SELECT count(*) FROM call_task WHERE reason = 'gap_overdue'")
    assert filed == 0

    cleared = await post(
        desk, f"/{event.id}/clear", "clinician", {"reason": "recovered"}, event.version
    )
    assert cleared.status == 200, cleared.body
    await file_overdue_gaps(desk.pool, desk.api.clock)
    assert (
        await desk.pool.fetchval("SELECT count(*) FROM call_task WHERE reason = 'gap_overdue'") == 0
    )
    # Booking session 2 now (29 days, more than twice the 7-day target) is not flagged for
    # review: the clearance is the approval, and the booking's warning says so.
    booked = await desk.api.call(
        "POST",
        "/api/v1/bookings",
        role="front_desk",
        json={
            "patient_id": desk.patient_id,
            "treatment_id": await desk.treatment_id("hair-mesotherapy"),
            "practitioner_id": HART,
            "start": london(date(2026, 3, 31), 10).astimezone(UTC).isoformat(),
            "series_id": series_id,
        },
    )
    assert booked.status in (200, 201), booked.body
    new_id = int(
        await desk.pool.fetchval(
            "SELECT id FROM appointment WHERE series_id = $1 AND position = 2", series_id
        )
    )
    assert (await desk.read(new_id, role="clinician")).body["needs_review"] is False
    logged = await desk.audit("booking.create")
    assert any(f"adverse event {event.id}" in w for w in logged[-1]["details"]["warnings"])


async def test_no_next_session_is_proposed_to_a_patient_an_event_holds(desk: Desk) -> None:
    await with_care_sms(desk)
    _, (done,) = await desk.course(
        [desk.api.clock.now() - timedelta(hours=1)], statuses=["completed"]
    )
    await report(desk, tier="emergency", appointment_id=done)
    assert await propose_next_sessions(desk.pool, desk.api.clock, hold=timedelta(hours=48)) == 0
    note = await desk.pool.fetchval("SELECT note FROM session_proposal WHERE status = 'skipped'")
    assert note == "an adverse event holds the next session"
    assert await messages(desk, "session_proposal") == []


async def test_an_overdue_course_without_an_event_still_goes_on_the_call_list(desk: Desk) -> None:
    await desk.course([london(MONDAY, 8)], statuses=["completed"])
    desk.api.clock.set(london(date(2026, 3, 25), 9))
    await file_overdue_gaps(desk.pool, desk.api.clock)
    filed = await desk.pool.fetchval("SELECT count(*) FROM call_task WHERE reason = 'gap_overdue'")
    assert filed == 1


# -- list, CSV -------------------------------------------------------------------------------------


async def test_list_filters_and_csv_export(desk: Desk) -> None:
    first = await report(desk, tier="routine", lot_number="LOT-A", symptoms="itch")
    desk.api.clock.advance(timedelta(days=2))
    second = await report(desk, tier="urgent", lot_number="LOT-B", symptoms="=HYPERLINK(1)")
    other = await desk.new_patient("Lin")
    third = await report(desk, tier="urgent", patient_id=other, lot_number="LOT-A")
    ack = await post(desk, f"/{third.id}/acknowledge", "clinician", {"note": "calling"}, 1)
    assert ack.status == 200 and ack.body["status"] == "acknowledged"

    async def ids(**params: str) -> list[int]:
        reply = await desk.api.call("GET", BASE, role="clinician", params=params)
        assert reply.status == 200, reply.body
        return [item["id"] for item in reply.body["items"]]

    assert await ids() == [third.id, second.id, first.id]  # newest first
    assert await ids(lot_number="LOT-A") == [third.id, first.id]
    assert await ids(tier="urgent", status="open") == [second.id]
    assert await ids(status="acknowledged") == [third.id]
    assert await ids(patient_id=str(other)) == [third.id]
    assert await ids(clinic_id=str(desk.api.clinic_id), limit="1") == [third.id]
    since = (datetime(2026, 3, 3, tzinfo=UTC)).isoformat()
    assert await ids(since=since) == [third.id, second.id]
    assert await ids(until=since) == [first.id]
    bad = await desk.api.call("GET", BASE, role="clinician", params={"tier": "mild"})
    assert bad.status == 422 and bad.body["errors"][0]["path"] == "tier"

    exported = await desk.api.call(
        "GET", BASE + ".csv", role="clinician", params={"lot_number": "LOT-A"}
    )
    assert exported.status == 200
    assert exported.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.body)))
    assert [int(r["id"]) for r in rows] == [third.id, first.id]
    assert rows[1]["symptoms"] == "itch" and rows[0]["status"] == "acknowledged"
    everything = await desk.api.call("GET", BASE + ".csv", role="admin")
    cells = {r["id"]: r for r in csv.DictReader(io.StringIO(everything.body))}
    # A cell a spreadsheet would run as a formula is quoted.
    assert cells[str(second.id)]["symptoms"] == "'=HYPERLINK(1)"
    assert (await desk.api.call("GET", BASE + ".csv", role="front_desk")).status == 403
    assert await desk.audit("adverse_event.export")


# -- history, erasure, roles, versions -------------------------------------------------------------


async def test_history_rows_cannot_be_updated_or_deleted_by_the_services(desk: Desk) -> None:
    event = await report(desk, tier="routine")
    for statement in (
        "UPDATE adverse_event_history SET reason = 'nothing happened' WHERE adverse_event_id = $1",
        "DELETE FROM adverse_event_history WHERE adverse_event_id = $1",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await desk.pool.execute(statement, event.id)
    assert (
        len((await desk.api.call("GET", f"{BASE}/{event.id}", role="admin")).body["history"]) == 1
    )


async def test_erasure_keeps_adverse_events_and_the_export_includes_them(desk: Desk) -> None:
    event = await report(desk, tier="urgent", lot_number="LOT-9")
    exported = await desk.api.call(
        "GET", f"/api/v1/patients/{desk.patient_id}/export", role="admin"
    )
    assert exported.status == 200, exported.body
    (shown,) = exported.body["adverse_events"]
    assert shown["id"] == event.id and shown["history"][0]["action"] == "open"
    erased = await desk.api.call(
        "POST",
        f"/api/v1/patients/{desk.patient_id}/erase",
        role="admin",
        json={"reason": "asked by the patient"},
    )
    assert erased.status == 200, erased.body
    kept = await desk.api.call("GET", f"{BASE}/{event.id}", role="clinician")
    assert kept.status == 200
    assert kept.body["symptoms"] == "swelling at the injection site"
    assert kept.body["lot_number"] == "LOT-9" and kept.body["history"]
    logged = await desk.audit("patient.erase")
    assert "adverse_events" in logged[0]["details"]["kept"]


async def test_the_front_desk_opens_and_lists_events_but_sees_and_judges_nothing_clinical(
    desk: Desk,
) -> None:
    body = {
        "clinic_id": desk.api.clinic_id,
        "patient_id": desk.patient_id,
        "symptoms": "says her scalp is hot and swollen",
        "tier": "urgent",
    }
    graded = await post(desk, "", "front_desk", {**body, "grade": 3})
    assert graded.status == 403
    assert await desk.pool.fetchval("SELECT count(*) FROM adverse_event") == 0
    opened = await post(desk, "", "front_desk", body)
    assert opened.status == 201, opened.body
    assert "symptoms" not in opened.body and "history" not in opened.body
    assert "tier" not in opened.body and "grade" not in opened.body
    event_id, version = opened.body["id"], opened.body["version"]
    listed = await desk.api.call("GET", BASE, role="front_desk")
    assert listed.status == 200 and listed.body["items"][0]["id"] == event_id
    assert "scalp" not in str(listed.body)
    one = await desk.api.call("GET", f"{BASE}/{event_id}", role="front_desk")
    assert one.status == 200 and "scalp" not in str(one.body)
    for action, json in (
        ("acknowledge", {"note": "ok"}),
        ("assess", {"grade": 1, "reason": "x"}),
        ("resolve", {"notes": "fine"}),
        ("clear", {"reason": "fine"}),
    ):
        assert (
            await post(desk, f"/{event_id}/{action}", "front_desk", json, version)
        ).status == 403
    # A clinician grading at the time of the call may: the grade is in the history.
    by_clinician = await post(
        desk, "", "clinician", {**body, "grade": 2, "grade_reason": "sounds moderate"}
    )
    assert by_clinician.status == 201, by_clinician.body
    assert by_clinician.body["grade"] == 2
    assert by_clinician.body["history"][-1]["reason"] == "sounds moderate"


async def test_a_grade_edit_made_on_a_stale_version_is_refused(desk: Desk) -> None:
    event = await report(desk, tier="urgent")
    read = await desk.api.call("GET", f"{BASE}/{event.id}", role="clinician")
    seen = int(read.headers["ETag"].strip('"'))
    first = await post(desk, f"/{event.id}/assess", "clinician", {"grade": 2, "reason": "a"}, seen)
    assert first.status == 200
    second = await post(desk, f"/{event.id}/assess", "admin", {"grade": 4, "reason": "b"}, seen)
    # The project's answer to a stale If-Match: 412 with the current version, nothing changed.
    assert second.status == 412, second.body
    assert second.body["current_version"] == first.body["version"]
    assert second.headers["ETag"] == f'"{first.body["version"]}"'
    assert (await desk.api.call("GET", f"{BASE}/{event.id}", role="admin")).body["grade"] == 2
    missing = await desk.api.call(
        "POST", f"{BASE}/{event.id}/assess", role="clinician", json={"grade": 4, "reason": "c"}
    )
    assert missing.status == 428
    assert await event_version(desk, event.id) == first.body["version"]


async def test_urgent_and_emergency_events_alert_staff_and_carry_the_sessions_lot(
    desk: Desk,
) -> None:
    """An event above routine reaches a clinician through the priority lane in the reporting
    transaction; a routine one waits for the call list. The lot is the session record's."""
    _, (done,) = await desk.course([london(MONDAY, 8)], statuses=["completed"])
    await desk.pool.execute(
        "INSERT INTO session_record (appointment_id, product, lot_number, performed_by,"
        " recorded_by, recorded_at, created_at)"
        " VALUES ($1, 'Dermaheal HL', 'LOT-42', $2, 'test', $3, $3)",
        done,
        HART,
        desk.api.clock.now(),
    )
    routine = await report(desk, tier="routine", appointment_id=done)
    urgent = await report(desk, tier="urgent", appointment_id=done)
    emergency = await report(desk, tier="emergency", appointment_id=done, source="sms")
    assert {e.lot_number for e in (routine, urgent, emergency)} == {"LOT-42"}

    raised = await desk.pool.fetch(
        "SELECT adverse_event_id, tier FROM staff_alert WHERE adverse_event_id = ANY($1::bigint[])"
        " ORDER BY id",
        [routine.id, urgent.id, emergency.id],
    )
    assert [(r["adverse_event_id"], r["tier"]) for r in raised] == [
        (urgent.id, "urgent"),
        (emergency.id, "emergency"),
    ]
    sent = await desk.pool.fetch(
        "SELECT channel, urgent FROM notification WHERE kind = 'staff_alert' ORDER BY id"
    )
    # The emergency reaches the on-call clinician by SMS and email, in the priority lane.
    assert {r["channel"] for r in sent} == {"sms", "email"} and all(r["urgent"] for r in sent)
    timeline = await desk.api.call(
        "GET", f"/api/v1/patients/{desk.patient_id}/safety-timeline", role="clinician"
    )
    assert timeline.status == 200, timeline.body
    kinds = [(e["type"], e.get("adverse_event_id")) for e in timeline.body["entries"]]
    for event in (routine, urgent, emergency):
        assert ("adverse_event", event.id) in kinds
    assert ("staff_alert", urgent.id) in kinds and ("staff_alert", emergency.id) in kinds
    assert ("staff_alert", routine.id) not in kinds


async def test_the_export_and_the_timeline_hold_the_check_ins_answers_and_alerts(
    desk: Desk,
) -> None:
    """A patient's access request and a clinician's timeline show what was asked after their
    session and what staff were alerted to, not only the events."""
    _, (done,) = await desk.course([london(MONDAY, 10)], statuses=["booked"])
    checked_in = await desk.act(done, "check-in")  # re-confirms the screening: all "no"
    assert checked_in.status == 200, checked_in.body
    completed = await desk.act(
        done,
        "complete",
        role="clinician",
        json={"record": {"product": "Dermaheal HL", "lot_number": "LOT-9"}},
    )
    assert completed.status == 200, completed.body
    urgent = await report(desk, tier="urgent", appointment_id=done)

    export = await desk.api.call("GET", f"/api/v1/patients/{desk.patient_id}/export", role="admin")
    assert export.status == 200, export.body
    asked = export.body["check_ins"]
    assert [c["position"] for c in asked] == [1, 2, 3, 4]
    assert {c["appointment_id"] for c in asked} == {done}
    assert [a["adverse_event_id"] for a in export.body["staff_alerts"]] == [urgent.id]
    answers = export.body["screening_answers"]
    assert answers and {(a["appointment_id"], a["source"], a["answer"]) for a in answers} == {
        (done, "check_in", False)
    }

    timeline = await desk.api.call(
        "GET", f"/api/v1/patients/{desk.patient_id}/safety-timeline", role="clinician"
    )
    entries = timeline.body["entries"]
    assert sorted(e["position"] for e in entries if e["type"] == "check_in") == [1, 2, 3, 4]
