"""The check-in follow-up sweep: no check-in is left without an answer or a person.

For each open check-in due by now (shared/store/check_ins.py):
* planned, its message sent: it is now `sent` (the time the patient was asked);
* planned, its message ended unsent (opted out, consent withdrawn, expired): asked again on
  the channel the patient allows now; with none (or that channel failed already), staff call:
  a call task `check_in_no_channel`;
* planned with channel `call` (nobody may be written to): the call task, at the due time;
* sent, no answer after the step's `nudge_after_hours`: one nudge on the channel allowed now
  (with none: the call task at once);
* nudged, no answer `call_after_hours` later: a call task `check_in_unanswered`;
* its patient erased: cancelled (nobody is to be contacted; answers already given stay).
An answer (shared.domain.check_ins.record_answer) ends the follow-up at any point.

Replicas: each batch is one transaction that locks its check-ins `FOR UPDATE SKIP LOCKED`, and
every status step is written from the status it was read in, so two sweeps never nudge or
call about one check-in twice; one open call task per session and reason covers every
unanswered check-in of that session.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from shared.clock import Clock
from shared.db.transactions import in_transaction
from shared.domain import check_ins as check_in_domain
from shared.domain.reach import reach_of
from shared.store import call_tasks, check_ins, notifications, patients
from shared.store.check_ins import Carrier, CheckIn
from shared.sweeps import Sweep

NAME = "check-in-follow-up"
INTERVAL = timedelta(seconds=60)
BATCH = 100
SENT = ("sent", "delivered", "unknown")
WAITING = ("scheduled", "sending")


async def follow_up(pool: asyncpg.Pool, clock: Clock) -> int:
    """One pass over the open check-ins due by now; returns how many moved on.

    Replicas: each batch is one transaction that locks its check-ins `FOR UPDATE SKIP LOCKED`
    (another replica takes other rows), and each step is written from the status it was read
    in, so a check-in is nudged once and called about once whoever runs."""
    moved = 0
    while True:

        async def batch(conn: asyncpg.Connection) -> tuple[int, int]:
            now = clock.now()
            rows = await check_ins.follow_up_candidates(conn, now=now, limit=BATCH)
            done = 0
            for carrier in rows:
                if await _step(conn, carrier, now):
                    done += 1
            return len(rows), done

        seen, done = await in_transaction(pool, batch)
        moved += done
        # A full batch where nothing moved would be read again: stop (the next tick looks).
        if seen < BATCH or done == 0:
            return moved


async def _step(conn: asyncpg.Connection, carrier: Carrier, now: datetime) -> bool:
    check_in = carrier.check_in
    patient = await patients.get(conn, check_in.patient_id)
    if patient is None or patient.erased_at is not None:
        # Erased: contact data is gone and nobody may be asked; the answers given are kept.
        return await check_ins.cancel(conn, check_in.id, now=now)
    if check_in.status == "planned":
        return await _planned(conn, carrier, now)
    if check_in.status == "sent":
        assert check_in.sent_at is not None
        if now < check_in.sent_at + timedelta(hours=check_in.nudge_after_hours):
            return False
        channel = await _channel_now(conn, check_in)
        if channel == "call":
            return await _call(conn, check_in, "check_in_unanswered", "asked, no answer", now)
        await check_in_domain.ask(conn, check_in, channel, due_at=now, now=now, nudge=True)
        await check_ins.mark_nudged(conn, check_in.id, now=now)
        return True
    # nudged
    assert check_in.nudged_at is not None
    if now < check_in.nudged_at + timedelta(hours=check_in.call_after_hours):
        return False
    return await _call(conn, check_in, "check_in_unanswered", "asked and nudged, no answer", now)


async def _planned(conn: asyncpg.Connection, carrier: Carrier, now: datetime) -> bool:
    check_in = carrier.check_in
    if carrier.notification_status in SENT and carrier.sent_at is not None:
        await check_ins.mark_sent(conn, check_in.id, sent_at=carrier.sent_at, now=now)
        return True
    if carrier.notification_status in WAITING:
        return False  # the notifier has it (quiet hours, pacing)
    # Never written (channel 'call'), or ended without being sent: decide again.
    channel = await _channel_now(conn, check_in)
    if channel != "call":
        tried = await notifications.outbox.rows_for_check_in(conn, check_in.id)
        if not any(r.channel == channel and r.status not in SENT for r in tried):
            return await check_in_domain.reask(conn, check_in, channel, now=now)
    return await _call(
        conn, check_in, "check_in_no_channel", "cannot be texted or emailed: ask by phone", now
    )


async def _channel_now(conn: asyncpg.Connection, check_in: CheckIn) -> check_ins.CheckInChannel:
    return check_in_domain.channel_for(await reach_of(conn, check_in.patient_id))


async def _call(
    conn: asyncpg.Connection,
    check_in: CheckIn,
    reason: call_tasks.CallReason,
    why: str,
    now: datetime,
) -> bool:
    detail = f"aftercare check-in {check_in.position}: {why}"
    task_id = await call_tasks.file(
        conn,
        clinic_id=check_in.clinic_id,
        patient_id=check_in.patient_id,
        appointment_id=check_in.appointment_id,
        reason=reason,
        detail=detail,
        now=now,
    )
    if task_id is None:  # the session's open task for this reason covers this one too
        task_id = next(
            (
                t.id
                for t in await call_tasks.open_for_appointment(conn, check_in.appointment_id)
                if t.reason == reason
            ),
            None,
        )
    await check_ins.mark_called(conn, check_in.id, call_task_id=task_id, now=now)
    return True


FOLLOW_UP_CHECK_INS = Sweep(NAME, INTERVAL, follow_up)
