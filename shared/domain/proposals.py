"""A proposed next session, settled: accepted (the held session is booked), declined (released,
and the front desk calls), or released unanswered (released, the patient told how to book, and
the front desk calls). Used by the notifier's SMS replies and the scheduler's release sweep.

Lock order: the proposal row, then its appointment. Whoever locks the proposal first settles it
(`proposals.settle` re-checks that it is still open), so a "C" arriving while the release sweep
runs either books the session or finds it released, never both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from shared import outbox_plan
from shared.domain.appointment_changes import Change, transition_audited
from shared.store import appointments, call_tasks, holds, proposals
from shared.store.appointments import Appointment
from shared.store.proposals import Proposal

# An unanswered proposal is released this long before its hold would expire, so that the
# proposal sweep (not the hold-expiry sweep) lets it go, and tells the patient and the desk.
RELEASE_BEFORE_HOLD_ENDS = timedelta(hours=1)
DECLINED_REASON = "the patient asked for other times than the proposed one"
UNANSWERED_REASON = "the proposed next session was not answered in time"
WITHDRAWN_REASON = "staff booked the course's next session themselves"
# What the hold-expiry sweep writes on the appointments of expired holds.
HOLD_EXPIRED = "hold expired"


@dataclass(frozen=True)
class Settled:
    proposal: Proposal
    appointment: Appointment


async def lock_open(conn: asyncpg.Connection, appointment_id: int) -> Proposal | None:
    """The open proposal holding `appointment_id`, locked; None if there is none (settled)."""
    return await proposals.lock_open_for_appointment(conn, appointment_id)


def still_held(proposal: Proposal, change: Change) -> bool:
    """The hold has not run out (the patient may still take the time)."""
    return proposal.answer_by is not None and change.now < (
        proposal.answer_by + RELEASE_BEFORE_HOLD_ENDS
    )


async def accept(
    conn: asyncpg.Connection,
    proposal: Proposal,
    change: Change,
    *,
    inbound_message_id: int | None = None,
) -> Settled | None:
    """Book the held session of a locked open proposal, and plan its confirmation email and
    reminders; None when the session is no longer held (released meanwhile)."""
    assert proposal.appointment_id is not None
    current = await appointments.lock(conn, proposal.appointment_id)
    if current is None or current.status != "held" or not still_held(proposal, change):
        return None
    booked = await transition_audited(
        conn,
        current,
        "booked",
        "book",
        change,
        reason="accepted the proposed next session",
        details={"via": "sms", "proposal_id": proposal.id},
        audit_details={"via": "sms", "proposal_id": proposal.id, "to_status": "booked"},
    )
    if proposal.hold_id is not None:
        await holds.end(conn, proposal.hold_id, now=change.now)
    await proposals.settle(
        conn, proposal.id, "accepted", now=change.now, inbound_message_id=inbound_message_id
    )
    await outbox_plan.plan_accepted_proposal(conn, booked, now=change.now)
    return Settled(proposal, booked)


async def release(
    conn: asyncpg.Connection,
    proposal: Proposal,
    change: Change,
    *,
    declined: bool,
    inbound_message_id: int | None = None,
) -> Settled | None:
    """Let the held session of a locked open proposal go: cancelled, its hold ended, and the
    patient on the call list (declined: 'reschedule_requested'; unanswered:
    'proposal_unanswered', and the patient told how to book). A held session no longer held
    (cancelled by staff) is only settled. None if the proposal was settled before."""
    assert proposal.appointment_id is not None
    status: proposals.ProposalStatus = "declined" if declined else "released"
    if not await proposals.settle(
        conn, proposal.id, status, now=change.now, inbound_message_id=inbound_message_id
    ):
        return None
    reason = DECLINED_REASON if declined else UNANSWERED_REASON
    current = await appointments.lock(conn, proposal.appointment_id)
    assert current is not None
    if proposal.hold_id is not None:
        await holds.end(conn, proposal.hold_id, now=change.now)
    released = current
    if current.status == "held":
        released = await transition_audited(
            conn,
            current,
            "cancelled",
            "release_proposal",
            change,
            reason=reason,
            details={"proposal_id": proposal.id},
            audit_details={"proposal_id": proposal.id, "to_status": "cancelled"},
        )
    elif current.cancelled_reason != HOLD_EXPIRED:
        # Staff cancelled or booked the held time themselves: nothing to let go, and nobody to
        # tell or call about it. (A hold that ran out first, the scheduler having been down, is
        # still told and called about.)
        return Settled(proposal, current)
    await call_tasks.file(
        conn,
        clinic_id=proposal.clinic_id,
        patient_id=proposal.patient_id,
        appointment_id=proposal.appointment_id,
        reason="reschedule_requested" if declined else "proposal_unanswered",
        detail=(
            f"Session {proposal.position}: the patient asked for other times than the one "
            "proposed; find one with them"
            if declined
            else f"Session {proposal.position}: the proposed time was not answered and has "
            "been released; the patient was asked to call"
        ),
        inbound_message_id=inbound_message_id,
        now=change.now,
    )
    if not declined:
        await outbox_plan.plan_proposal_released(conn, released, now=change.now)
    return Settled(proposal, released)


async def withdraw_for_series(conn: asyncpg.Connection, series_id: int, change: Change) -> int:
    """Staff are booking the course's next session themselves: any proposal still waiting for
    the patient's answer is withdrawn first (its held time cancelled, the proposal settled as
    released, nobody told or called: staff are arranging it), so the course never has both.
    Returns how many."""
    withdrawn = 0
    for proposal in await proposals.lock_open_for_series(conn, series_id):
        assert proposal.appointment_id is not None
        current = await appointments.lock(conn, proposal.appointment_id)
        if current is not None and current.status == "held":
            await transition_audited(
                conn,
                current,
                "cancelled",
                "release_proposal",
                change,
                reason=WITHDRAWN_REASON,
                details={"proposal_id": proposal.id},
                audit_details={"proposal_id": proposal.id, "to_status": "cancelled"},
            )
        if proposal.hold_id is not None:
            await holds.end(conn, proposal.hold_id, now=change.now)
        await proposals.settle(conn, proposal.id, "released", now=change.now)
        withdrawn += 1
    return withdrawn
