"""Undoing a no-show recorded by mistake, through the real HTTP API: back to the status it had,
audited, the no-show-only 2 h reminders withdrawn (unless another no-show still earns them), and
the no-show sweep never marks it again."""

from __future__ import annotations

from datetime import timedelta

from shared.store import appointments
from tests import factories
from tests.conftest import Reply
from tests.queues.conftest import Queues

WHY = "she was in the chair; the desk clicked the wrong row"


async def _reachable(queues: Queues) -> None:
    await factories.consent(
        queues.pool, queues.patient_id, {"care_sms": True, "care_email": True}, now=queues.now
    )


async def _version(queues: Queues, appointment_id: int) -> int:
    return int(
        await queues.pool.fetchval("SELECT version FROM appointment WHERE id = $1", appointment_id)
    )


async def _no_show(queues: Queues, appointment_id: int) -> None:
    version = await _version(queues, appointment_id)
    reply = await queues.call(
        "POST",
        f"/api/v1/appointments/{appointment_id}/no-show",
        headers={"If-Match": f'"{version}"'},
    )
    assert reply.status == 200, reply.body


async def _two_hour_reminders(queues: Queues, appointment_id: int) -> list[str]:
    rows = await queues.pool.fetch(
        "SELECT status FROM notification WHERE appointment_id = $1 AND kind = 'reminder_2h'",
        appointment_id,
    )
    return [r["status"] for r in rows]


async def _undo(
    queues: Queues, appointment_id: int, role: str = "front_desk", **body: object
) -> Reply:
    payload = {"reason": WHY, "expected_version": await _version(queues, appointment_id), **body}
    return await queues.call(
        "POST", f"/api/v1/appointments/{appointment_id}/undo-no-show", role=role, json=payload
    )


async def test_an_undone_no_show_is_confirmed_again_and_its_2h_reminders_are_withdrawn(
    queues: Queues,
) -> None:
    await _reachable(queues)
    missed = await queues.appointment(queues.now - timedelta(hours=3), status="confirmed")
    later = await queues.appointment(queues.now + timedelta(days=3))
    await _no_show(queues, missed)
    assert await _two_hour_reminders(queues, later) == ["scheduled"]

    reply = await _undo(queues, missed)

    assert reply.status == 200, reply.body
    assert reply.body["status"] == "confirmed"
    assert reply.body["history"][-1]["from_status"] == "no_show"
    assert reply.body["history"][-1]["reason"] == WHY
    assert await _two_hour_reminders(queues, later) == ["cancelled"]
    [audit] = await queues.audit("appointment.undo_no_show")
    assert audit["reason"] == WHY and audit["entity_id"] == missed
    assert audit["details"]["to_status"] == "confirmed"
    assert len(audit["details"]["cancelled_notification_ids"]) == 1

    # The no-show sweep, which marks overdue booked and confirmed sessions, leaves it alone.
    async with queues.pool.acquire() as conn, conn.transaction():
        marked = await appointments.mark_overdue_no_shows(conn, now=queues.now, limit=100)
    assert missed not in [m.id for m in marked]
    assert (await appointments.get(queues.pool, missed)).status == "confirmed"  # type: ignore[union-attr]


async def test_a_booked_session_goes_back_to_booked_and_another_no_show_keeps_the_reminders(
    queues: Queues,
) -> None:
    await _reachable(queues)
    really_missed = await queues.appointment(queues.now - timedelta(days=7))
    wrongly = await queues.appointment(queues.now - timedelta(hours=3))
    later = await queues.appointment(queues.now + timedelta(days=3))
    await _no_show(queues, really_missed)
    await _no_show(queues, wrongly)

    reply = await _undo(queues, wrongly)

    assert reply.status == 200, reply.body
    assert reply.body["status"] == "booked"
    # She did miss the week before: the 2 h reminder still fits her.
    assert await _two_hour_reminders(queues, later) == ["scheduled"]


async def test_only_a_no_show_can_be_undone_and_only_at_the_version_read(queues: Queues) -> None:
    booked = await queues.appointment(queues.now + timedelta(days=1))
    not_one = await _undo(queues, booked)
    assert not_one.status == 409 and not_one.body["type"].endswith("/not-a-no-show")

    missed = await queues.appointment(queues.now - timedelta(hours=3))
    await _no_show(queues, missed)
    stale = await _undo(queues, missed, expected_version=1)
    assert stale.status == 412, stale.body
    assert stale.body["current_version"] == await _version(queues, missed)
    assert (await appointments.get(queues.pool, missed)).status == "no_show"  # type: ignore[union-attr]
    assert await queues.audit("appointment.undo_no_show") == []


async def test_an_ordinary_action_still_cannot_leave_no_show(queues: Queues) -> None:
    missed = await queues.appointment(queues.now - timedelta(hours=3))
    await _no_show(queues, missed)
    version = await _version(queues, missed)
    confirm = await queues.call(
        "POST", f"/api/v1/appointments/{missed}/confirm", headers={"If-Match": f'"{version}"'}
    )
    assert confirm.status == 409 and confirm.body["type"].endswith("/illegal-transition")


async def test_undo_needs_a_reason_and_the_desk(queues: Queues) -> None:
    missed = await queues.appointment(queues.now - timedelta(hours=3))
    await _no_show(queues, missed)
    assert (await _undo(queues, missed, role="clinician")).status == 403
    blank = await _undo(queues, missed, reason=" ")
    assert blank.status == 422 and [e["path"] for e in blank.body["errors"]] == ["reason"]
    assert (await _undo(queues, missed, role="admin")).status == 200


async def test_a_patient_who_came_is_checked_in_by_the_undo_and_the_session_completed(
    queues: Queues,
) -> None:
    missed = await queues.appointment(queues.now - timedelta(hours=3))
    await _no_show(queues, missed)

    reply = await _undo(queues, missed, attended=True)

    assert reply.status == 200, reply.body
    assert reply.body["status"] == "checked_in"
    version = await _version(queues, missed)
    completed = await queues.call(
        "POST",
        f"/api/v1/appointments/{missed}/complete",
        role="clinician",
        headers={"If-Match": f'"{version}"'},
    )
    assert completed.status == 200, completed.body
    assert completed.body["status"] == "completed"
    [audit] = await queues.audit("appointment.undo_no_show")
    assert audit["details"]["to_status"] == "checked_in"
