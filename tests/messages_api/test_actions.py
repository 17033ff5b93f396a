"""Resending and cancelling: what the new row copies and what it does not, idempotency, the
states each action accepts (409 with the current status otherwise), audit, and real races."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import asyncpg
import pytest

from tests.messages_api.conftest import SECRET_TEXT, Outbox

RESEND = "/api/v1/messages/{id}/resend"
CANCEL = "/api/v1/messages/{id}/cancel"
WHY = {"reason": "patient says the text never arrived"}


# -- resend ----------------------------------------------------------------------------------------


async def test_resend_creates_a_new_row_due_now_for_todays_appointment(outbox: Outbox) -> None:
    original = await outbox.add(
        kind="reminder_72h",
        status="undelivered",
        error_code=30003,
        expires_at=outbox.now + timedelta(days=1),
    )
    # The appointment changed since the original was planned (its version moved on).
    await outbox.pool.execute(
        "UPDATE appointment SET version = version + 2 WHERE id = $1", outbox.appointment_id
    )

    reply = await outbox.call("POST", RESEND.format(id=original), json=WHY)

    assert reply.status == 201, reply.body
    created = reply.body
    assert created["id"] != original and created["resend_of"] == original
    assert created["status"] == "scheduled" and created["attempts"] == 0
    assert datetime.fromisoformat(created["due_at"]) == outbox.now
    assert (created["kind"], created["channel"], created["template"]) == (
        "reminder_72h",
        "sms",
        "reminder_72h",
    )
    assert created["recipient"] == "+44 **** ***456"
    assert created["error_code"] is None and created["urgent"] is False
    assert [(e["from_status"], e["to_status"], e["reason"]) for e in created["history"]] == [
        (None, "scheduled", f"resend of notification {original}")
    ]
    assert created["attempt_log"] == [] and SECRET_TEXT not in str(created)

    old, new = await outbox.row(original), await outbox.row(created["id"])
    assert new["context"] == old["context"]
    assert (new["patient_id"], new["appointment_id"]) == (outbox.patient_id, outbox.appointment_id)
    assert new["appointment_version"] == 3
    assert new["expires_at"] == old["expires_at"]
    assert new["dedupe_key"] == f"resend:{original}:1"
    assert old["status"] == "undelivered"  # the original's record stays as it was


async def test_the_copy_starts_without_the_originals_send_state(outbox: Outbox) -> None:
    original = await outbox.add(kind="booking_confirmation", channel="email", status="sent")
    # What the notifier wrote while sending the original: where it went, its Message-ID, a slot.
    await outbox.pool.execute(
        """
        UPDATE notification SET context = context || jsonb_build_object(
            'attempt_to', 'old.address@example.com', 'message_id', '<n1@clinic.test>',
            'sender_slot', $2::text, 'appointment_ids', jsonb_build_array($3::bigint))
        WHERE id = $1
        """,
        original,
        outbox.now.isoformat(),
        outbox.appointment_id,
    )

    reply = await outbox.call("POST", RESEND.format(id=original), json=WHY)

    context = (await outbox.row(reply.body["id"]))["context"]
    assert context["appointment_ids"] == [outbox.appointment_id] and context["note"] == SECRET_TEXT
    assert not {"attempt_to", "message_id", "sender_slot"} & context.keys()
    # The copy goes to the patient's current address; the original shows where it went.
    assert reply.body["recipient"] == "a***@example.com"
    shown = await outbox.call("GET", f"/api/v1/messages/{original}")
    assert shown.body["recipient"] == "o***@example.com"


async def test_resend_is_audited_with_who_and_why(outbox: Outbox) -> None:
    original = await outbox.add(status="failed")
    reply = await outbox.call("POST", RESEND.format(id=original), role="admin", json=WHY)

    (row,) = await outbox.audit("message.resend")
    assert (row["entity"], row["entity_id"], row["patient_id"]) == (
        "notification",
        reply.body["id"],
        outbox.patient_id,
    )
    assert (row["actor_kind"], row["actor_id"]) == ("staff", await outbox.staff_id("admin"))
    assert row["reason"] == WHY["reason"] and row["details"] == {"of": original}


async def test_an_urgent_reply_is_resent_as_an_ordinary_message(outbox: Outbox) -> None:
    original = await outbox.add(kind="reply", urgent=True, appointment_id=None, status="sent")
    reply = await outbox.call("POST", RESEND.format(id=original), json=WHY)
    assert reply.status == 201 and reply.body["urgent"] is False
    assert (await outbox.row(reply.body["id"]))["appointment_version"] is None


async def test_each_resend_is_a_new_row_with_its_own_key(outbox: Outbox) -> None:
    original = await outbox.add(status="delivered")
    first = await outbox.call("POST", RESEND.format(id=original), json=WHY)
    second = await outbox.call("POST", RESEND.format(id=original), json=WHY)
    assert first.status == second.status == 201
    keys = [(await outbox.row(r.body["id"]))["dedupe_key"] for r in (first, second)]
    assert keys == [f"resend:{original}:1", f"resend:{original}:2"]


async def test_resend_with_the_same_idempotency_key_answers_the_first_time_again(
    outbox: Outbox,
) -> None:
    original = await outbox.add(status="failed")
    headers = {"Idempotency-Key": "resend-7f3a"}

    first = await outbox.call("POST", RESEND.format(id=original), json=WHY, headers=headers)
    again = await outbox.call("POST", RESEND.format(id=original), json=WHY, headers=headers)

    assert first.status == again.status == 201
    assert again.body == first.body and again.headers["Idempotent-Replayed"] == "true"
    assert len(await outbox.audit("message.resend")) == 1
    copies = await outbox.pool.fetchval(
        "SELECT count(*) FROM notification WHERE dedupe_key LIKE 'resend:%'"
    )
    assert copies == 1
    other_body = await outbox.call(
        "POST", RESEND.format(id=original), json={"reason": "other"}, headers=headers
    )
    assert other_body.status == 422


async def test_concurrent_retries_with_one_key_make_one_copy(outbox: Outbox) -> None:
    original = await outbox.add(status="failed")
    headers = {"Idempotency-Key": "double-click"}
    replies = await asyncio.gather(
        *(
            outbox.call("POST", RESEND.format(id=original), json=WHY, headers=headers)
            for _ in range(6)
        )
    )
    assert {r.status for r in replies} == {201}
    assert len({r.body["id"] for r in replies}) == 1
    assert len(await outbox.audit("message.resend")) == 1


async def test_concurrent_resends_without_a_key_each_get_their_own_row(outbox: Outbox) -> None:
    original = await outbox.add(status="failed")
    replies = await asyncio.gather(
        *(outbox.call("POST", RESEND.format(id=original), json=WHY) for _ in range(6))
    )
    assert [r.status for r in replies] == [201] * 6
    keys = await outbox.pool.fetch(
        "SELECT dedupe_key FROM notification WHERE id = ANY($1::bigint[])",
        [r.body["id"] for r in replies],
    )
    assert sorted(k["dedupe_key"] for k in keys) == sorted(
        f"resend:{original}:{n}" for n in range(1, 7)
    )


@pytest.mark.parametrize("status", ["scheduled", "sending", "unknown"])
async def test_an_unsettled_message_is_not_resent(outbox: Outbox, status: str) -> None:
    original = await outbox.add(status=status)
    reply = await outbox.call("POST", RESEND.format(id=original), json=WHY)
    assert reply.status == 409
    assert reply.body["current_status"] == status
    assert reply.body["type"].endswith("/not-resendable")
    assert await outbox.audit("message.resend") == []


async def test_staff_alerts_and_expired_messages_are_not_resent(outbox: Outbox) -> None:
    alert = await outbox.add(
        kind="staff_alert", recipient="+447700900777", urgent=True, status="failed"
    )
    stale = await outbox.add(status="expired", expires_at=outbox.now - timedelta(minutes=1))

    refused_alert = await outbox.call("POST", RESEND.format(id=alert), json=WHY)
    refused_stale = await outbox.call("POST", RESEND.format(id=stale), json=WHY)

    assert refused_alert.status == 409 and refused_alert.body["type"].endswith("/not-resendable")
    assert refused_stale.status == 409 and refused_stale.body["type"].endswith("/expired")
    assert refused_stale.body["current_status"] == "expired"
    count = await outbox.pool.fetchval("SELECT count(*) FROM notification")
    assert count == 2


async def test_resend_of_an_unknown_message_is_404(outbox: Outbox) -> None:
    reply = await outbox.call("POST", RESEND.format(id=424242), json=WHY)
    assert reply.status == 404


# -- cancel ----------------------------------------------------------------------------------------


async def test_cancel_stops_a_scheduled_message_with_the_reason(outbox: Outbox) -> None:
    message = await outbox.add()

    reply = await outbox.call(
        "POST", CANCEL.format(id=message), json={"reason": "patient will phone instead"}
    )

    assert reply.status == 200, reply.body
    assert reply.body["status"] == "cancelled"
    assert reply.body["status_reason"] == "cancelled by staff: patient will phone instead"
    assert reply.body["history"][-1]["from_status"] == "scheduled"
    assert reply.body["history"][-1]["to_status"] == "cancelled"
    (row,) = await outbox.audit("message.cancel")
    assert (row["entity_id"], row["patient_id"], row["reason"]) == (
        message,
        outbox.patient_id,
        "patient will phone instead",
    )
    assert (row["actor_kind"], row["actor_id"]) == ("staff", await outbox.staff_id("front_desk"))
    assert (await outbox.row(message))["status"] == "cancelled"


@pytest.mark.parametrize(
    "status", ["sending", "sent", "delivered", "failed", "cancelled", "suppressed", "unknown"]
)
async def test_cancel_of_anything_but_scheduled_is_409_with_the_status(
    outbox: Outbox, status: str
) -> None:
    message = await outbox.add(status=status)
    reply = await outbox.call("POST", CANCEL.format(id=message), json={"reason": "no"})
    assert reply.status == 409
    assert reply.body["current_status"] == status
    assert reply.body["type"].endswith("/not-cancellable")
    assert (await outbox.row(message))["status"] == status
    assert await outbox.audit("message.cancel") == []


async def test_concurrent_cancels_succeed_once(outbox: Outbox) -> None:
    message = await outbox.add()
    replies = await asyncio.gather(
        *(outbox.call("POST", CANCEL.format(id=message), json={"reason": "x"}) for _ in range(6))
    )
    assert sorted(r.status for r in replies) == [200] + [409] * 5
    assert {r.body["current_status"] for r in replies if r.status == 409} == {"cancelled"}
    events = await outbox.pool.fetchval(
        "SELECT count(*) FROM notification_event WHERE notification_id = $1 AND "
        "to_status = 'cancelled'",
        message,
    )
    assert events == 1


async def _wait_for_lock_waiter(pool: asyncpg.Pool) -> None:
    """Until some backend waits on a row lock (the cancel blocked behind the claim)."""
    for _ in range(10_000):
        # pg_locks: the services' role may not see other sessions' wait events.
        if await pool.fetchval(
            "SELECT count(*) > 0 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE NOT l.granted AND a.datname = current_database()"
        ):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the cancel never waited for the claim's row lock")


async def test_a_cancel_racing_a_workers_claim_loses_cleanly(outbox: Outbox) -> None:
    message = await outbox.add()
    async with outbox.pool.acquire() as worker:
        claim = worker.transaction()
        await claim.start()
        # The notifier's claim: the row is locked and becomes `sending`, not yet committed.
        await worker.execute(
            "UPDATE notification SET status = 'sending', attempts = attempts + 1 WHERE id = $1",
            message,
        )
        cancel = asyncio.create_task(
            outbox.call("POST", CANCEL.format(id=message), json={"reason": "too late"})
        )
        await _wait_for_lock_waiter(outbox.pool)
        await claim.commit()
        reply = await cancel

    assert reply.status == 409 and reply.body["current_status"] == "sending"
    assert (await outbox.row(message))["status"] == "sending"


async def test_a_claim_after_the_cancel_finds_nothing_to_send(outbox: Outbox) -> None:
    message = await outbox.add()
    reply = await outbox.call("POST", CANCEL.format(id=message), json={"reason": "not needed"})
    claimed = await outbox.pool.fetch(
        """
        UPDATE notification SET status = 'sending'
        WHERE id IN (SELECT id FROM notification WHERE status = 'scheduled' AND due_at <= $1
                     FOR UPDATE SKIP LOCKED)
        RETURNING id
        """,
        outbox.now + timedelta(days=1),
    )
    assert reply.status == 200 and claimed == []


async def test_cancel_of_an_unknown_message_is_404(outbox: Outbox) -> None:
    reply = await outbox.call("POST", CANCEL.format(id=424242), json={"reason": "x"})
    assert reply.status == 404


async def test_bad_bodies_are_refused_before_anything_changes(outbox: Outbox) -> None:
    message = await outbox.add(status="failed")
    scheduled = await outbox.add()
    for path in (RESEND.format(id=message), CANCEL.format(id=scheduled)):
        for body, status in (
            ({}, 422),
            ({"reason": ""}, 422),
            ({"reason": "   "}, 422),
            ({"reason": "x" * 501}, 422),
            ({"reason": "ok", "urgent": True}, 422),
            ({"reason": 5}, 422),
        ):
            reply = await outbox.call("POST", path, json=body)
            assert reply.status == status, (path, body, reply.body)
        no_json = await outbox.api.call(
            "POST", path, role="front_desk", headers={"Content-Type": "text/plain"}
        )
        assert no_json.status == 415
    assert (await outbox.row(scheduled))["status"] == "scheduled"
    assert await outbox.pool.fetchval("SELECT count(*) FROM notification") == 2
