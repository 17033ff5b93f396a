"""Next-session proposals (owner of `session_proposal`): after a course's session is completed
and the next one is not booked, a time is proposed to the patient and held for them.

Invariants: at most one proposal per completed session (`after_appointment_id` is unique: the
first replica to insert it owns it); a proposal is 'asked' while its held appointment waits for
the patient's answer, and is settled once (accepted, declined or released) under its row lock;
a 'skipped' proposal held nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from shared.store import Executor

ProposalStatus = Literal["asked", "accepted", "declined", "released", "skipped"]


@dataclass(frozen=True)
class Proposal:
    id: int
    clinic_id: int
    patient_id: int
    series_id: int
    after_appointment_id: int
    position: int
    appointment_id: int | None
    hold_id: int | None
    status: ProposalStatus
    note: str
    answer_by: datetime | None
    created_at: datetime
    settled_at: datetime | None
    inbound_message_id: int | None


_COLUMNS = """id, clinic_id, patient_id, series_id, after_appointment_id, position,
    appointment_id, hold_id, status, note, answer_by, created_at, settled_at, inbound_message_id"""


@dataclass(frozen=True)
class Candidate:
    """A course to propose the next session of: its last completed session, nothing ahead."""

    series_id: int
    clinic_id: int
    patient_id: int
    treatment_id: int
    after_appointment_id: int
    after_position: int
    after_practitioner_id: int
    after_starts_at: datetime


async def candidates(db: Executor, *, after_id: int, limit: int) -> list[Candidate]:
    """Active courses (id above `after_id`, by id) whose latest completed session (by position)
    is not the last planned one, with nothing held, booked, confirmed or checked in, and no
    proposal made after that session yet."""
    rows = await db.fetch(
        """
        SELECT s.id AS series_id, s.clinic_id, s.patient_id, s.treatment_id,
               last.id AS after_appointment_id, last.position AS after_position,
               last.practitioner_id AS after_practitioner_id,
               last.starts_at AS after_starts_at
        FROM series s
        JOIN LATERAL (
            SELECT a.id, a.position, a.practitioner_id, lower(a.during) AS starts_at
            FROM appointment a
            WHERE a.series_id = s.id AND a.status = 'completed' AND a.position IS NOT NULL
            ORDER BY a.position DESC, lower(a.during) DESC, a.id DESC LIMIT 1
        ) last ON true
        WHERE s.status = 'active' AND s.id > $1
          AND last.position < s.planned_sessions
          AND NOT EXISTS (SELECT 1 FROM appointment u
                          WHERE u.series_id = s.id
                            AND u.status IN ('held', 'booked', 'confirmed', 'checked_in'))
          AND NOT EXISTS (SELECT 1 FROM session_proposal p
                          WHERE p.after_appointment_id = last.id)
        ORDER BY s.id
        LIMIT $2
        """,
        after_id,
        limit,
    )
    return [Candidate(**dict(r)) for r in rows]


async def claim(
    conn: asyncpg.Connection, candidate: Candidate, *, position: int, now: datetime
) -> int | None:
    """Claim the proposal after `candidate`'s session (as 'skipped' until something is held);
    None when another transaction claimed it first. A concurrent claim waits on this one's
    entry in the unique index, then finds it taken."""
    value = await conn.fetchval(
        """
        INSERT INTO session_proposal (clinic_id, patient_id, series_id, after_appointment_id,
                                      position, status, settled_at, created_at)
        VALUES ($1, $2, $3, $4, $5, 'skipped', $6, $6)
        ON CONFLICT (after_appointment_id) DO NOTHING
        RETURNING id
        """,
        candidate.clinic_id,
        candidate.patient_id,
        candidate.series_id,
        candidate.after_appointment_id,
        position,
        now,
    )
    return None if value is None else int(value)


async def mark_skipped(conn: Executor, proposal_id: int, *, note: str) -> None:
    await conn.execute(
        "UPDATE session_proposal SET note = $2 WHERE id = $1 AND status = 'skipped'",
        proposal_id,
        note,
    )


async def mark_asked(
    conn: Executor,
    proposal_id: int,
    *,
    appointment_id: int,
    hold_id: int,
    answer_by: datetime,
) -> None:
    await conn.execute(
        """
        UPDATE session_proposal SET status = 'asked', appointment_id = $2, hold_id = $3,
               answer_by = $4, settled_at = NULL
        WHERE id = $1
        """,
        proposal_id,
        appointment_id,
        hold_id,
        answer_by,
    )


async def get(db: Executor, proposal_id: int) -> Proposal | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM session_proposal WHERE id = $1",  # noqa: S608 - constant
        proposal_id,
    )
    return None if row is None else Proposal(**dict(row))


async def lock_open_for_appointment(
    conn: asyncpg.Connection, appointment_id: int
) -> Proposal | None:
    """The 'asked' proposal holding `appointment_id`, locked for the caller's transaction."""
    row = await conn.fetchrow(
        f"""SELECT {_COLUMNS} FROM session_proposal
        WHERE appointment_id = $1 AND status = 'asked' FOR UPDATE""",  # noqa: S608 - constant
        appointment_id,
    )
    return None if row is None else Proposal(**dict(row))


async def claim_unanswered(
    conn: asyncpg.Connection, *, now: datetime, limit: int
) -> list[Proposal]:
    """'asked' proposals whose answer time has come, locked (skipping those another
    transaction holds: a reply being handled, another replica's sweep)."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM session_proposal
        WHERE status = 'asked' AND answer_by <= $1
        ORDER BY answer_by, id
        LIMIT $2
        FOR UPDATE SKIP LOCKED
        """,  # noqa: S608 - constant
        now,
        limit,
    )
    return [Proposal(**dict(r)) for r in rows]


async def settle(
    conn: Executor,
    proposal_id: int,
    status: ProposalStatus,
    *,
    now: datetime,
    inbound_message_id: int | None = None,
) -> bool:
    """Settle an 'asked' proposal (its row locked by the caller); False if it was not open."""
    done = await conn.fetchval(
        """
        UPDATE session_proposal SET status = $2, settled_at = $3, inbound_message_id = $4
        WHERE id = $1 AND status = 'asked'
        RETURNING id
        """,
        proposal_id,
        status,
        now,
        inbound_message_id,
    )
    return done is not None


async def for_series(db: Executor, series_id: int) -> list[Proposal]:
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM session_proposal WHERE series_id = $1 ORDER BY id",  # noqa: S608
        series_id,
    )
    return [Proposal(**dict(r)) for r in rows]


async def lock_open_for_series(conn: asyncpg.Connection, series_id: int) -> list[Proposal]:
    """The series' 'asked' proposals, locked for the caller's transaction (id order)."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM session_proposal
        WHERE series_id = $1 AND status = 'asked' ORDER BY id FOR UPDATE""",  # noqa: S608
        series_id,
    )
    return [Proposal(**dict(r)) for r in rows]
