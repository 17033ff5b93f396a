"""Erasure completes and export answers an access request, written as the accident: a patient
with a course of three future sessions, reminders queued, a confirmation already sent, an SMS
they wrote us and a booking form on file asks to be erased. Afterwards nothing more is sent to
them, their sessions are cancelled, their texts and numbers are gone, and an export holds no
contact data, while the medical record, appointments, consents and audit log stay."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.clock import FrozenClock
from shared.store import (
    call_tasks,
    form_differences,
    inbound_messages,
    inbox,
    notifications,
    patients,
)
from shared.store.notifications.dispatch import AttemptStart, LaneKey, SendCandidate, SendOutcome
from shared.store.notifications.outbox import NewNotification
from tests import factories
from tests.conftest import BookingApi, SmtpSink, StandIn
from tests.notifier.conftest import StartNotifier, eventually, start_notifier  # noqa: F401

BASE = "/api/v1/patients"
MOBILE = "+447911123456"
EMAIL = "ada.lovelace@example.com"
SESSIONS = [datetime(2026, 3, d, 10, tzinfo=UTC) for d in (6, 13, 20)]
# What identifies Ada, in any form an export or a row could show it.
ADA_TRACES = (MOBILE, "7911123456", EMAIL, "Lovelace", "running late", "Byron")


def traces(document: Any) -> list[str]:
    text = json.dumps(document, default=str).lower()
    return [trace for trace in ADA_TRACES if trace.lower() in text]


async def patient(api: BookingApi, first: str, last: str, mobile: str, email: str) -> int:
    created = await api.call(
        "POST",
        BASE,
        role="front_desk",
        json={"first_name": first, "last_name": last, "mobile": mobile, "email": email},
    )
    assert created.status == 201, created.body
    for kind in ("care_sms", "care_email", "marketing_sms"):
        consent = {"kind": kind, "granted": True, "wording_version": "v1"}
        reply = await api.call(
            "POST", f"{BASE}/{created.body['id']}/consents", role="front_desk", json=consent
        )
        assert reply.status == 201, reply.body
    return int(created.body["id"])


async def book(
    api: BookingApi, patient_id: int, treatment: str, starts: list[datetime], practitioner_id: int
) -> dict[str, Any]:
    await factories.courses_without_consultation(api.pool)  # erasure, not the consultation gate
    treatment_id = await api.pool.fetchval("SELECT id FROM treatment WHERE code = $1", treatment)
    sessions = [{"practitioner_id": practitioner_id, "start": s.isoformat()} for s in starts]
    reply = await api.call(
        "POST",
        "/api/v1/bookings",
        role="front_desk",
        json={"patient_id": patient_id, "treatment_id": treatment_id, "sessions": sessions},
    )
    assert reply.status == 201, reply.body
    return reply.body  # type: ignore[no-any-return]


async def rows_of(api: BookingApi, patient_id: int) -> list[dict[str, Any]]:
    found = await api.pool.fetch(
        "SELECT id, kind, channel, status, status_reason, context FROM notification "
        "WHERE patient_id = $1 ORDER BY id",
        patient_id,
    )
    return [dict(r) for r in found]


async def queue_drained(api: BookingApi, clock: FrozenClock) -> bool:
    busy = await api.pool.fetchval(
        "SELECT count(*) FROM notification WHERE status = 'sending' "
        "OR (status = 'scheduled' AND due_at <= $1)",
        clock.now(),
    )
    return busy == 0


async def test_erasing_a_patient_with_three_future_sessions_ends_everything_planned_for_them(
    booking_api: BookingApi,
    start_notifier: StartNotifier,  # noqa: F811
    twilio: StandIn,
    smtp: SmtpSink,
    clock: FrozenClock,
) -> None:
    api = booking_api
    ada = await patient(api, "Ada", "Lovelace", MOBILE, EMAIL)
    grace = await patient(api, "Grace", "Hopper", "+447911123999", "grace@example.org")
    read = await api.call("GET", f"{BASE}/{ada}", role="clinician")
    allergies = await api.call(
        "PATCH",
        f"{BASE}/{ada}",
        role="clinician",
        json={"allergies": "lidocaine"},
        headers={"If-Match": read.headers["ETag"]},
    )
    assert allergies.status == 200, allergies.body
    course = await book(api, ada, "hair-mesotherapy", SESSIONS, 1)
    session_ids = [a["id"] for a in course["appointments"]]
    await book(api, grace, "consultation", [datetime(2026, 3, 6, 11, tzinfo=UTC)], 2)
    late = await inbound_messages.insert(
        api.pool,
        message_sid="SM" + "a" * 32,
        from_number=MOBILE,
        to_number="+15005550006",
        body="Running late, sorry",
        opt_out_type=None,
        received_at=clock.now(),
    )
    await inbound_messages.insert(
        api.pool,
        message_sid="SM" + "b" * 32,
        from_number="+447911123999",
        to_number="+15005550006",
        body="See you Friday",
        opt_out_type=None,
        received_at=clock.now(),
    )
    await form_differences.insert(
        api.pool,
        clinic_id=api.clinic_id,
        patient_id=ada,
        hold_id=None,
        appointment_ids=[],
        submitted={"last_name": "Byron"},
        now=clock.now(),
    )

    # Staff filed her text and noted what they did; the desk has a call to make about her.
    assert late is not None
    filed = await inbox.insert(
        api.pool,
        clinic_id=api.clinic_id,
        patient_id=ada,
        inbound_message_id=late,
        reason="free_text",
        danger_words=[],
        now=clock.now(),
    )
    await inbox.mark_handled(
        api.pool, filed, by="desk", note="Rang Mrs Lovelace back", now=clock.now()
    )
    await call_tasks.file(
        api.pool,
        clinic_id=api.clinic_id,
        patient_id=ada,
        appointment_id=session_ids[0],
        reason="reschedule_requested",
        detail="asked for the Byron Street branch",
        now=clock.now(),
    )

    # The booking confirmations go out: Ada's rows now say where they went.
    notifier = await start_notifier()

    async def confirmed() -> bool:
        return len(twilio.twilio.sent_to(MOBILE)) == 1 and len(smtp.recorder.emails_to(EMAIL)) == 1

    await eventually(confirmed, what="Ada's booking confirmations")
    await eventually(lambda: queue_drained(api, clock), what="the queue drained")
    assert any("attempt_to" in r["context"] for r in await rows_of(api, ada))

    # An access request first: the export holds everything, contact data included.
    before = await api.call("GET", f"{BASE}/{ada}/export", role="admin")
    assert before.status == 200, before.body
    assert set(traces(before.body)) == set(ADA_TRACES)
    assert len(before.body["appointments"]) == 3 and len(before.body["courses"]) == 1
    assert before.body["inbound_messages"][0]["body"] == "Running late, sorry"
    assert before.body["form_differences"][0]["submitted"] == {"last_name": "Byron"}
    assert before.body["inbox_items"][0]["note"] == "Rang Mrs Lovelace back"
    assert before.body["call_tasks"][0]["detail"] == "asked for the Byron Street branch"
    assert before.body["patient"]["allergies"] == "lidocaine"
    assert {m["kind"] for m in before.body["messages"]} >= {"booking_confirmation", "reminder_72h"}
    assert before.body["messages"][0]["history"] and before.body["messages"][0]["attempt_log"]
    assert before.body["not_included"]
    (exported,) = await api.pool.fetch(
        "SELECT * FROM audit_log WHERE action = 'patient.export' AND patient_id = $1", ada
    )
    assert exported["details"]["held"]["appointments"] == 3

    # Neither the desk nor a clinician may erase or export.
    for role in ("front_desk", "clinician"):
        refused = await api.call("POST", f"{BASE}/{ada}/erase", role=role, json={"reason": "x"})
        assert refused.status == 403
        assert (await api.call("GET", f"{BASE}/{ada}/export", role=role)).status == 403

    reply = await api.call(
        "POST", f"{BASE}/{ada}/erase", role="admin", json={"reason": "erasure request #17"}
    )
    assert reply.status == 200, reply.body
    assert reply.body["allergies"] == "lidocaine" and reply.body["mobile"] is None

    # Days pass: Ada's reminders would have been due, Grace's are and go out.
    clock.set(datetime(2026, 3, 5, 12, tzinfo=UTC))

    async def grace_reminded() -> bool:
        return len(twilio.twilio.sent_to("+447911123999")) >= 2

    await eventually(grace_reminded, what="Grace's reminder")
    await eventually(lambda: queue_drained(api, clock), what="the queue drained")
    await notifier.stop()
    assert len(twilio.twilio.sent_to(MOBILE)) == 1 and len(smtp.recorder.emails_to(EMAIL)) == 1

    statuses = await api.pool.fetch(
        "SELECT status, cancelled_reason, patient_id FROM appointment WHERE id = ANY($1) "
        "ORDER BY id",
        session_ids,
    )
    assert [(r["status"], r["cancelled_reason"], r["patient_id"]) for r in statuses] == [
        ("cancelled", "patient erased", ada)
    ] * 3  # kept as history, cancelled
    course_status = await api.pool.fetchval(
        "SELECT status FROM series WHERE id = $1", course["series_id"]
    )
    assert course_status == "cancelled"
    events = await api.pool.fetchval(
        "SELECT count(*) FROM appointment_event WHERE appointment_id = ANY($1) "
        "AND to_status = 'cancelled'",
        session_ids,
    )
    assert events == 3
    cancels = await api.pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'appointment.cancel' AND patient_id = $1",
        ada,
    )
    assert cancels == 3

    messages = await rows_of(api, ada)
    reminders = [m for m in messages if m["kind"].startswith("reminder")]
    assert reminders and {(m["status"], m["status_reason"]) for m in reminders} == {
        ("cancelled", "patient erased")
    }
    assert not [m for m in messages if m["kind"] == "cancellation_notice"]
    assert all(not {"attempt_to", "text"} & set(m["context"]) for m in messages)

    inbound = await api.pool.fetch("SELECT * FROM inbound_message ORDER BY id")
    assert (inbound[0]["body"], inbound[0]["from_number"], inbound[0]["patient_id"]) == (
        "",
        "erased",
        ada,
    )
    assert inbound[1]["body"] == "See you Friday"  # Grace's, untouched
    assert await form_differences.for_patient(api.pool, ada) == []
    (item,) = await inbox.for_patient(api.pool, ada)
    (task,) = await call_tasks.for_patient(api.pool, ada)
    assert (item.note, task.detail, task.outcome) == ("patient erased", "", "patient erased")
    assert task.done_at is not None  # nobody to call any more
    erased = await patients.get(api.pool, ada)
    assert erased is not None and erased.link_version == 2  # every link sent so far is dead

    (decision,) = await api.pool.fetch(
        "SELECT * FROM audit_log WHERE action = 'patient.erase' AND patient_id = $1", ada
    )
    assert decision["reason"] == "erasure request #17"
    removed, kept = decision["details"]["removed"], decision["details"]["kept"]
    assert removed["future_appointments_cancelled"] == session_ids
    assert removed["courses_cancelled"] == [course["series_id"]]
    assert set(removed["queued_messages_cancelled"]) == {m["id"] for m in reminders}
    assert removed["inbound_sms_scrubbed"] == 1 and removed["form_differences_deleted"] == 1
    assert {"medical_record", "appointments", "consents", "audit_log"} <= set(kept)
    assert traces(dict(decision)) == []

    # The export after erasure: what was kept, and nothing that identifies or reaches Ada.
    after = await api.call("GET", f"{BASE}/{ada}/export", role="admin")
    assert after.status == 200, after.body
    assert traces(after.body) == []
    assert after.body["patient"]["allergies"] == "lidocaine"
    assert [a["status"] for a in after.body["appointments"]] == ["cancelled"] * 3
    assert after.body["inbound_messages"][0]["received_at"] and after.body["form_differences"] == []
    consents = {(c["kind"], c["granted"]) for c in after.body["patient"]["consents"]}
    assert ("marketing_sms", False) in consents


async def test_provider_texts_quoting_the_address_are_scrubbed_and_unsettled_rows_forgotten_later(
    booking_api: BookingApi, clock: FrozenClock
) -> None:
    api = booking_api
    ada = await patient(api, "Ada", "Lovelace", MOBILE, EMAIL)
    twin = await patient(api, "Augusta", "King", "+447911123777", "augusta@example.org")
    now = clock.now()

    async def attempted(reason: str, status: str) -> int:
        notification_id = await notifications.outbox.insert(
            api.pool,
            NewNotification(
                clinic_id=api.clinic_id,
                kind="reply",
                channel="sms",
                template="reply",
                due_at=now,
                dedupe_key=f"reply:{reason}",
                patient_id=ada,
                context={"text": "Dear Ada, see you soon"},
            ),
            now=now,
        )
        assert notification_id is not None
        async with api.pool.acquire() as conn:
            (claimed,) = await notifications.dispatch.claim_due(
                conn,
                lane=LaneKey("sms", False),
                now=now,
                lease=timedelta(minutes=1),
                worker="w",
                limit=10,
            )
            assert claimed.id == notification_id
            decided = await notifications.dispatch.decide_sends(
                conn,
                [
                    SendCandidate(
                        AttemptStart(notification_id, b"h", {"attempt_to": MOBILE}),
                        covered=[],
                        seen_versions={},
                    )
                ],
                worker="w",
                now=now,
                lease=timedelta(minutes=1),
            )
            started = decided.attempts
            await notifications.dispatch.record_outcomes(
                conn,
                [
                    SendOutcome(
                        notification_id,
                        started[notification_id],
                        status,
                        now,
                        reason,  # type: ignore[arg-type]
                        "permanent" if status == "failed" else "ambiguous",
                    )
                ],
            )
        return notification_id

    failed = await attempted(f"Twilio 21211: The 'To' number {MOBILE} is not valid", "failed")
    lost = await attempted("outcome unknown, to be reconciled: timeout", "unknown")
    # Augusta shares Ada's old number now (a family phone): messages from it may be hers.
    await patients.update(api.pool, twin, expected_version=1, changes={"mobile": MOBILE}, now=now)
    await inbound_messages.insert(
        api.pool,
        message_sid="SM" + "c" * 32,
        from_number=MOBILE,
        to_number="+15005550006",
        body="Is Friday still on?",
        opt_out_type=None,
        received_at=now,
    )

    reply = await api.call("POST", f"{BASE}/{ada}/erase", role="admin", json={"reason": "req 3"})
    assert reply.status == 200, reply.body

    row = await notifications.rows.get(api.pool, failed)
    assert row is not None and MOBILE not in (row.status_reason or "")
    assert row.status_reason == "Twilio 21211: The 'To' number [erased] is not valid"
    assert "attempt_to" not in row.context and "text" not in row.context
    detail = await api.pool.fetchval(
        "SELECT detail FROM notification_attempt WHERE notification_id = $1", failed
    )
    assert detail == "Twilio 21211: The 'To' number [erased] is not valid"

    # The row whose outcome was lost keeps the number reconciliation needs, until it settles.
    unsettled = await notifications.rows.get(api.pool, lost)
    assert unsettled is not None and unsettled.context["attempt_to"] == MOBILE
    (decision,) = await api.pool.fetch(
        "SELECT details FROM audit_log WHERE action = 'patient.erase' AND patient_id = $1", ada
    )
    kept = decision["details"]["kept"]
    assert kept["messages_being_reconciled"]["ids"] == [lost]
    assert kept["inbound_sms_from_a_shared_number"]["count"] == 1
    assert await api.pool.fetchval("SELECT body FROM inbound_message") == "Is Friday still on?"
    settled = await notifications.sweeps.reconcile_as_not_sent(
        api.pool, lost, now=now, reason="reconciled: not at Twilio", status="failed"
    )
    assert settled
    forgotten = await notifications.rows.get(api.pool, lost)
    assert forgotten is not None and not {"attempt_to", "text"} & set(forgotten.context)


async def test_the_export_is_documented_for_admins_only(booking_api: BookingApi) -> None:
    document = (await booking_api.call("GET", "/api/openapi.json")).body
    operation = document["paths"][BASE + "/{patient_id}/export"]["get"]
    assert operation["x-roles"] == ["admin"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/PatientExport"}
    sections = set(document["components"]["schemas"]["PatientExport"]["properties"])
    assert {"patient", "consent_history", "courses", "appointments", "messages"} <= sections
    assert {"inbound_messages", "form_differences", "audit_entries", "not_included"} <= sections
    assert document["paths"][BASE + "/{patient_id}/erase"]["post"]["x-roles"] == ["admin"]
