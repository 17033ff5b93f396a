"""Next-session proposals: after a course's session is completed and the next one is not booked,
the scheduler finds a time inside the gap window (same practitioner and local time preferred,
closest to the target gap), holds it for the patient and asks by SMS ("Reply C to accept, R for
other times") and email. The notifier's reply handler settles the answer
(shared/domain/proposals.py); an unanswered proposal is released an hour before its hold would
run out, the patient is told to call, and the front desk gets a call task.

Safe with any number of scheduler replicas:
* proposing: each proposal is claimed first by inserting its row, unique per completed
  session; a second replica's insert waits for the first's transaction and then does nothing,
  so one replica holds a time and plans the question, once. The course is then re-read under
  its series lock, which a booking of the next session (staff, the patient's page) takes
  first, so a course booked meanwhile is not proposed to as well. The held appointment, the
  proposal, its messages and the audit row commit together.
* releasing: open proposals whose answer time has come are claimed `FOR UPDATE SKIP LOCKED`
  and settled only if still open under that lock (a "C" being handled holds the same lock), so
  each is released, told and called about once.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

import asyncpg

from shared import outbox_plan
from shared.clock import Clock
from shared.db.transactions import in_transaction
from shared.domain import hold_expiry
from shared.domain import proposals as proposal_domain
from shared.domain.appointment_changes import Change
from shared.domain.appointment_states import ACTIVE
from shared.scheduling import gaps
from shared.scheduling.loader import load_clinic, load_schedules, load_treatment
from shared.store import (
    adverse_events,
    appointments,
    audit,
    holds,
    practitioners,
    proposals,
    series,
)
from shared.store.appointments import NewAppointment
from shared.store.holds import NewHold
from shared.store.proposals import Candidate
from shared.sweeps import Sweep

BATCH = 50
PROPOSE_INTERVAL = timedelta(seconds=60)
RELEASE_INTERVAL = timedelta(seconds=60)
SOURCE = "proposal"


async def propose_next_sessions(pool: asyncpg.Pool, clock: Clock, *, hold: timedelta) -> int:
    """Propose (and hold for `hold`) the next session of every course that waits for one;
    returns how many were proposed.

    Replicas: each proposal is claimed by inserting its row, unique per completed session (see
    the module docstring)."""
    proposed = 0
    after = 0
    while True:
        waiting = await proposals.candidates(pool, after_id=after, limit=BATCH)
        for candidate in waiting:

            async def work(conn: asyncpg.Connection, candidate: Candidate = candidate) -> bool:
                return await _propose(conn, candidate, hold=hold, now=clock.now())

            if await in_transaction(pool, work):
                proposed += 1
        if len(waiting) < BATCH:
            return proposed
        after = waiting[-1].series_id


async def _propose(
    conn: asyncpg.Connection, candidate: Candidate, *, hold: timedelta, now: datetime
) -> bool:
    position = candidate.after_position + 1
    proposal_id = await proposals.claim(conn, candidate, position=position, now=now)
    if proposal_id is None:
        return False  # another replica has it
    # The next session may have been booked since the candidate was read (by the patient on
    # their page, or staff): those bookings lock the series first, so under its lock the
    # course is seen as it is, and a course that no longer waits gets no proposal.
    course = await series.lock(conn, candidate.series_id)
    ahead = [
        a for a in await appointments.for_series(conn, candidate.series_id) if a.status in ACTIVE
    ]
    if course is None or course.status != "active" or ahead:
        await proposals.mark_skipped(
            conn, proposal_id, note="the next session was booked meanwhile"
        )
        return False
    treatment = await load_treatment(conn, candidate.treatment_id)
    clinic = await load_clinic(conn, candidate.clinic_id)
    rule = None if treatment is None else treatment.gaps.get(position)
    if treatment is None or clinic is None or rule is None:
        await proposals.mark_skipped(conn, proposal_id, note=f"no gap rule for session {position}")
        return False
    if await adverse_events.holding_for_patient(conn, candidate.patient_id):
        # The patient was asked to call the clinic before their next session: no time is
        # proposed until a clinician clears the event (staff book it then).
        await proposals.mark_skipped(
            conn, proposal_id, note="an adverse event holds the next session"
        )
        return False
    reach = await outbox_plan.reach_of(conn, candidate.patient_id)
    if reach is None or not reach.sms:
        # The answer comes by SMS: without it nothing is held (the gap sweep still tells staff).
        await proposals.mark_skipped(conn, proposal_id, note="the patient cannot be asked by SMS")
        return False
    zone = clinic.zone
    previous_day = candidate.after_starts_at.astimezone(zone).date()
    last_day = previous_day + timedelta(days=rule.max_days)
    if now.astimezone(zone).date() > last_day:
        await proposals.mark_skipped(conn, proposal_id, note="the gap window has passed")
        return False
    practitioner_ids = await practitioners.active_ids(conn, clinic.id, None)
    # Read the calendars under their locks (as a booking inserts under them): a proposal being
    # made by another replica at the same moment is then seen, not collided with.
    await appointments.lock_practitioner_calendars(conn, practitioner_ids)
    schedules = await load_schedules(
        conn,
        clinic.id,
        practitioner_ids=practitioner_ids,
        first_day=previous_day + timedelta(days=rule.min_days),
        last_day=last_day,
        zone=zone,
        now=now,
    )
    previous = gaps.Session(
        candidate.after_appointment_id,
        candidate.after_position,
        candidate.after_starts_at,
        candidate.after_practitioner_id,
        "completed",
    )
    slot = gaps.propose_next(
        treatment.spec,
        rule,
        previous,
        position,
        schedules,
        clinic.rules,
        now=now,
        step=clinic.slot_step,
    )
    if slot is None:
        await proposals.mark_skipped(
            conn, proposal_id, note=f"no free time {rule.min_days}-{rule.max_days} days after"
        )
        return False
    spec = treatment.spec
    occupied = spec.occupied(slot.start)
    gap = gaps.gap_days(candidate.after_starts_at, slot.start, zone)
    # A clinic may allow a soft maximum beyond twice the target: such a session needs clinician
    # review, as when staff book it (services/booking/domain/sessions.py says it the same way).
    review = (
        [
            f"session {position} is {gap} days after session {candidate.after_position}, more "
            f"than twice the target of {rule.target_days}: clinician review"
        ]
        if gap > 2 * rule.target_days
        else []
    )
    await hold_expiry.release_expired(
        conn,
        now=now,
        reason="expired hold in the way of a proposal",
        in_the_way=[(slot.practitioner_id, occupied.start, occupied.end)],
    )
    # Nobody is given this hold's token (it is random and thrown away): only the patient's
    # answer, through the proposal, can book or release it.
    hold_id = await holds.insert(
        conn,
        NewHold(
            clinic_id=clinic.id,
            treatment_id=treatment.id,
            token_hash=secrets.token_bytes(32),
            expires_at=now + hold,
        ),
        now=now,
    )
    try:
        async with conn.transaction():  # a savepoint: a clash leaves the claim in place
            held_id = await appointments.insert(
                conn,
                NewAppointment(
                    clinic_id=clinic.id,
                    practitioner_id=slot.practitioner_id,
                    treatment_id=treatment.id,
                    patient_id=candidate.patient_id,
                    status="held",
                    starts_at=slot.start,
                    ends_at=slot.start + spec.duration,
                    buffer_before=spec.buffer_before,
                    buffer_after=spec.buffer_after,
                    series_id=candidate.series_id,
                    position=position,
                    hold_id=hold_id,
                    needs_review=bool(review),
                    review_reasons=review,
                    source=SOURCE,
                ),
                actor=audit.SYSTEM.label,
                now=now,
            )
    except asyncpg.ExclusionViolationError:
        await holds.end(conn, hold_id, now=now)
        await proposals.mark_skipped(conn, proposal_id, note="the time found was taken meanwhile")
        return False
    answer_by = now + hold - proposal_domain.RELEASE_BEFORE_HOLD_ENDS
    await proposals.mark_asked(
        conn, proposal_id, appointment_id=held_id, hold_id=hold_id, answer_by=answer_by
    )
    held = await appointments.get(conn, held_id)
    assert held is not None
    planned = await outbox_plan.plan_proposal(conn, held, answer_by=answer_by, now=now)
    await audit.insert(
        conn,
        at=now,
        actor=audit.SYSTEM,
        action="series.propose_next",
        entity="series",
        entity_id=candidate.series_id,
        patient_id=candidate.patient_id,
        reason=f"session {candidate.after_position} completed and session {position} not booked",
        details={
            "proposal_id": proposal_id,
            "appointment_id": held_id,
            "starts_at": slot.start.isoformat(),
            "practitioner_id": slot.practitioner_id,
            "answer_by": answer_by.isoformat(),
            "notification_ids": planned,
        },
    )
    return True


async def release_unanswered(pool: asyncpg.Pool, clock: Clock) -> int:
    """Release every open proposal whose answer time has come; returns how many.

    Replicas: open proposals are claimed FOR UPDATE SKIP LOCKED and released only if still
    open under the lock (see the module docstring)."""
    now = clock.now()
    change = Change(audit.SYSTEM, now)

    async def batch(conn: asyncpg.Connection) -> int:
        released = 0
        for proposal in await proposals.claim_unanswered(conn, now=now, limit=BATCH):
            if await proposal_domain.release(conn, proposal, change, declined=False):
                released += 1
        return released

    total = 0
    while True:
        done = await in_transaction(pool, batch)
        total += done
        if done < BATCH:
            return total


def proposal_sweeps(hold: timedelta) -> list[Sweep]:
    async def propose(pool: asyncpg.Pool, clock: Clock) -> int:
        """Replicas: see propose_next_sessions."""
        return await propose_next_sessions(pool, clock, hold=hold)

    return [
        Sweep("propose-next-sessions", PROPOSE_INTERVAL, propose),
        Sweep("release-unanswered-proposals", RELEASE_INTERVAL, release_unanswered),
    ]
