"""Open questions: what a patient's SMS reply can be an answer to (services/notifier/replies.py).

A question is a message we sent by SMS that asked for an answer:
* the confirmation request (the 72 h reminder, alone or merged into another reminder: "Reply C
  to confirm, R to reschedule"), open while a session it asked about is still booked or
  confirmed and has not started;
* the proposal of a course's next session ("Reply C to accept, R for other times"), open while
  the proposed session is still held for the patient (shared/store/proposals.py).
The latest open one per patient is what a bare "C", "R" or "X" answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from shared.store import Executor

QuestionKind = Literal["confirm", "proposal"]
# The notification kind that asks a proposal question (shared/outbox_plan.SESSION_PROPOSAL).
PROPOSAL_KIND = "session_proposal"

# A reply to a question older than this is not read as its answer (a "C" weeks later more likely
# means something else; a person reads it instead).
ANSWERABLE_FOR = timedelta(days=14)


@dataclass(frozen=True)
class OpenQuestion:
    notification_id: int
    patient_id: int
    kind: QuestionKind
    asked_at: datetime
    # the sessions it asked about that are still open and to come, by start: booked or
    # confirmed for a confirmation request, the held session for a proposal
    appointment_ids: list[int]


async def latest_open(
    db: Executor, patient_ids: Sequence[int], *, now: datetime
) -> dict[int, OpenQuestion]:
    """Each patient's latest open question (patients with none are absent)."""
    rows = await db.fetch(
        """
        WITH asked AS (
            SELECT n.id, n.patient_id, n.sent_at, n.kind = $4 AS proposal,
                   array_append(
                       ARRAY(SELECT value::bigint FROM jsonb_array_elements_text(
                           CASE WHEN jsonb_typeof(n.context -> 'merged_appointment_ids') = 'array'
                                THEN n.context -> 'merged_appointment_ids' ELSE '[]' END)),
                       n.appointment_id) AS covered
            FROM notification n
            WHERE n.patient_id = ANY($1::bigint[]) AND n.channel = 'sms'
              AND n.status IN ('sent', 'delivered', 'unknown')
              AND n.sent_at >= $3
              AND (n.kind IN ('reminder_72h', $4)
                   OR (jsonb_typeof(n.context -> 'merged_kinds') = 'array'
                       AND n.context -> 'merged_kinds' ? 'reminder_72h'))
        ), still_open AS (
            SELECT q.id, q.patient_id, q.sent_at, q.proposal,
                   ARRAY(SELECT a.id FROM appointment a
                         WHERE a.id = ANY(q.covered) AND a.patient_id = q.patient_id
                           AND CASE WHEN q.proposal THEN a.status = 'held'
                                    ELSE a.status IN ('booked', 'confirmed') END
                           AND lower(a.during) > $2
                         ORDER BY lower(a.during), a.id) AS open_ids
            FROM asked q
        )
        SELECT DISTINCT ON (patient_id) id, patient_id, sent_at, proposal, open_ids
        FROM still_open
        WHERE cardinality(open_ids) > 0
        ORDER BY patient_id, sent_at DESC, id DESC
        """,
        list(patient_ids),
        now,
        now - ANSWERABLE_FOR,
        PROPOSAL_KIND,
    )
    return {
        r["patient_id"]: OpenQuestion(
            r["id"],
            r["patient_id"],
            "proposal" if r["proposal"] else "confirm",
            r["sent_at"],
            list(r["open_ids"]),
        )
        for r in rows
    }
