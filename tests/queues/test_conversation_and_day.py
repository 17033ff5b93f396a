"""A patient's conversation and the whole-clinic day view through the real HTTP API."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.store import notifications
from shared.store.notifications.outbox import NewNotification
from tests.queues.conftest import HART, PATEL, Queues, london

SECRET = "finasteride-and-minoxidil"


async def _sent(
    queues: Queues,
    kind: str,
    *,
    at: datetime,
    appointment_id: int | None = None,
    patient_id: int | None = None,
    status: str = "sent",
    context: dict[str, Any] | None = None,
) -> int:
    """An outbox row (its context holding text that must never be shown), sent at `at`."""
    queues.counter += 1
    new_id = await notifications.outbox.insert(
        queues.pool,
        NewNotification(
            clinic_id=queues.clinic_id,
            kind=kind,
            channel="sms",
            template=kind,
            due_at=at,
            dedupe_key=f"test:{queues.counter}",
            patient_id=patient_id or queues.patient_id,
            appointment_id=appointment_id,
            context={"text": SECRET, **(context or {})},
        ),
        now=queues.now,
    )
    assert new_id is not None
    if status != "scheduled":
        await queues.pool.execute(
            "UPDATE notification SET status = $2, sent_at = $3 WHERE id = $1", new_id, status, at
        )
    return new_id


# -- the conversation ------------------------------------------------------------------------------


async def test_the_conversation_interleaves_what_we_sent_and_what_came_back(
    queues: Queues,
) -> None:
    t0 = queues.now - timedelta(days=2)
    reminder = await _sent(queues, "reminder_72h", at=t0)
    confirm = await queues.sms(
        "C",
        received_at=t0 + timedelta(minutes=3),
        patient_id=queues.patient_id,
        clinic_id=queues.clinic_id,
        handled_as="confirmed",
        answer="Thanks, Ada: Tuesday 3 March at 10:00 is confirmed.",
    )
    question = await queues.sms("can I wash my hair after?", received_at=t0 + timedelta(hours=5))
    reply = await _sent(queues, "reply", at=t0 + timedelta(hours=6))
    pending = await _sent(
        queues, "reminder_24h", at=queues.now + timedelta(hours=3), status="scheduled"
    )
    # Someone else's messages, from another number, are not in Ada's conversation.
    grace = await queues.new_patient("Grace", mobile="+447700900111")
    await _sent(queues, "reminder_72h", at=t0, patient_id=grace)
    await queues.sms("hi", from_number="+447700900111", received_at=t0)

    page = await queues.call(
        "GET", f"/api/v1/patients/{queues.patient_id}/conversation", role="clinician"
    )

    assert page.status == 200, page.body
    entries = page.body["items"]
    assert [(e["direction"], (e["message"] or e["reply"])["id"]) for e in entries] == [
        ("outbound", reminder),
        ("inbound", confirm),
        ("inbound", question),
        ("outbound", reply),
        ("outbound", pending),
    ]
    assert entries[1]["reply"]["text"] == "C" and entries[1]["reply"]["handled_as"] == "confirmed"
    assert entries[1]["reply"]["answer"].startswith("Thanks, Ada")
    assert entries[0]["message"]["kind"] == "reminder_72h"
    assert entries[4]["message"]["status"] == "scheduled"
    # What we sent is never shown as text (it is not kept; the context is not for staff).
    assert SECRET not in str(page.body)
    [read] = await queues.audit("messages.read")
    assert read["details"]["via"] == "conversation" and read["patient_id"] == queues.patient_id
    assert read["details"]["notification_ids"] == [reminder, reply, pending]
    assert read["details"]["inbound_message_ids"] == [confirm, question]


async def test_pages_of_one_walk_the_conversation_across_ties_without_gaps(
    queues: Queues,
) -> None:
    """An SMS received the very instant a message went must not be skipped at a page break."""
    at = queues.now - timedelta(hours=1)
    ids = [
        ("outbound", await _sent(queues, "reminder_24h", at=at)),
        ("outbound", await _sent(queues, "reminder_2h", at=at)),
        ("inbound", await queues.sms("ok", received_at=at)),
        ("inbound", await queues.sms("see you", received_at=at)),
    ]
    path = f"/api/v1/patients/{queues.patient_id}/conversation"
    seen, cursor = [], None
    for _ in range(10):
        params = {"limit": "1", **({"cursor": cursor} if cursor else {})}
        page = await queues.call("GET", path, params=params)
        assert page.status == 200, page.body
        seen += [(e["direction"], (e["message"] or e["reply"])["id"]) for e in page.body["items"]]
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert seen == ids


async def test_an_empty_conversation_is_audited_and_an_unknown_patient_is_a_404(
    queues: Queues,
) -> None:
    path = f"/api/v1/patients/{queues.patient_id}/conversation"
    reply = await queues.call("GET", path)
    assert reply.status == 200 and reply.body == {"items": [], "next_cursor": None}
    assert len(await queues.audit("messages.read")) == 1
    assert (await queues.call("GET", "/api/v1/patients/99999/conversation")).status == 404


# -- the clinic's day ------------------------------------------------------------------------------


async def test_the_day_is_the_clinics_local_day_across_the_clock_change(queues: Queues) -> None:
    """29 March 2026: London springs forward at 01:00 UTC, a 23-hour day. Its first and last
    appointments are in; the evening before and the morning after are not."""
    day = date(2026, 3, 29)
    just_after_midnight = datetime(2026, 3, 29, 0, 15, tzinfo=UTC)  # 00:15 GMT
    late_evening = datetime(2026, 3, 29, 22, 30, tzinfo=UTC)  # 23:30 BST
    before = datetime(2026, 3, 28, 23, 45, tzinfo=UTC)  # 23:45 GMT on the 28th
    after = datetime(2026, 3, 29, 23, 15, tzinfo=UTC)  # 00:15 BST on the 30th
    inside = [
        await queues.appointment(just_after_midnight),
        await queues.appointment(late_evening, practitioner_id=PATEL),
    ]
    for start in (before, after):
        await queues.appointment(start)

    reply = await queues.call(
        "GET", f"/api/v1/clinics/{queues.clinic_id}/day", params={"date": day.isoformat()}
    )

    assert reply.status == 200, reply.body
    assert reply.body["time_zone"] == "Europe/London"
    assert reply.body["starts_at"].startswith("2026-03-29T00:00")
    assert reply.body["ends_at"].startswith("2026-03-29T23:00")
    by_practitioner = {p["id"]: p for p in reply.body["practitioners"]}
    assert set(by_practitioner) == {HART, PATEL}
    listed = [a["id"] for p in reply.body["practitioners"] for a in p["appointments"]]
    assert sorted(listed) == sorted(inside)
    assert by_practitioner[HART]["appointments"][0]["local_time"] == "00:15"
    assert by_practitioner[PATEL]["appointments"][0]["local_time"] == "23:30"


async def test_the_day_shows_names_confirmation_review_and_open_work_per_patient(
    queues: Queues,
) -> None:
    day = date(2026, 3, 10)
    confirmed = await queues.appointment(london(day, 9))
    asked = await queues.appointment(london(day, 11), needs_review=True, review_reasons=["x"])
    grace = await queues.new_patient("Grace")
    quiet = await queues.appointment(london(day, 10), practitioner_id=PATEL, patient_id=grace)
    version = await queues.pool.fetchval("SELECT version FROM appointment WHERE id = $1", confirmed)
    done = await queues.call(
        "POST", f"/api/v1/appointments/{confirmed}/confirm", headers={"If-Match": f'"{version}"'}
    )
    assert done.status == 200, done.body
    await _sent(queues, "reminder_72h", at=queues.now, appointment_id=asked)
    # A reminder still waiting to go has asked nothing yet.
    await _sent(
        queues,
        "reminder_72h",
        at=queues.now,
        appointment_id=quiet,
        patient_id=grace,
        status="scheduled",
    )
    await queues.call_task(asked)
    await queues.inbox_item()
    await queues.inbox_item("another question")

    reply = await queues.call(
        "GET", f"/api/v1/clinics/{queues.clinic_id}/day", params={"date": "2026-03-10"}
    )

    assert reply.status == 200, reply.body
    shown = {a["id"]: a for p in reply.body["practitioners"] for a in p["appointments"]}
    assert shown[confirmed]["confirmation"] == "confirmed"
    assert shown[asked]["confirmation"] == "asked"
    assert shown[quiet]["confirmation"] == "not_asked"
    assert shown[confirmed]["patient_name"] == "Ada Lovelace"
    assert shown[quiet]["patient_name"] == "Grace Hopper"
    assert shown[confirmed]["treatment_name"] == "Consultation"
    assert shown[asked]["needs_review"] is True and "review_reasons" not in shown[asked]
    assert (shown[asked]["open_call_tasks"], shown[asked]["open_inbox_items"]) == (1, 2)
    assert (shown[quiet]["open_call_tasks"], shown[quiet]["open_inbox_items"]) == (0, 0)
    reads = await queues.audit("appointment.read")
    assert {r["patient_id"] for r in reads if r["details"]["via"] == "clinic_day"} == {
        queues.patient_id,
        grace,
    }


async def test_the_day_view_is_the_desks_and_checks_its_date(queues: Queues) -> None:
    path = f"/api/v1/clinics/{queues.clinic_id}/day"
    assert (
        await queues.call("GET", path, role="clinician", params={"date": "2026-03-10"})
    ).status == 403
    bad = await queues.call("GET", path, params={"date": "2026-02-30"})
    assert bad.status == 422 and [e["path"] for e in bad.body["errors"]] == ["date"]
    missing = await queues.call("GET", path)
    assert missing.status == 422
    typo = await queues.call("GET", path, params={"date": "2026-03-10", "practitioner": "1"})
    assert typo.status == 422
    unknown = await queues.call("GET", "/api/v1/clinics/999/day", params={"date": "2026-03-10"})
    assert unknown.status == 404
