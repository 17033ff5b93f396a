"""Check-ins after a completed session (owner of `check_in`): one per session and plan step,
with how it is asked, what the patient answered, and what became of it.

Invariants: one check-in per session and step (`UNIQUE (appointment_id, position)`, so
completing twice plans nothing twice); an answer is recorded once (`record_answer` writes only
an unanswered row); the follow-up moves forward only (planned -> sent -> nudged -> called,
answered from any of them), each step written by one statement that checks the status it
moves from, so two sweeps never nudge or call twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from shared.store import Executor
from shared.store.check_in_plans import Answer, Tier, answers_from_json, answers_to_json

Status = Literal["planned", "sent", "nudged", "answered", "called", "cancelled"]
CheckInChannel = Literal["sms", "email", "call"]
Via = Literal["sms", "email", "staff"]
OPEN_STATUSES: tuple[Status, ...] = ("planned", "sent", "nudged")


@dataclass(frozen=True)
class CheckIn:
    id: int
    clinic_id: int
    patient_id: int
    appointment_id: int
    step_id: int | None
    position: int
    question: str
    answers: list[Answer]
    nudge_after_hours: int
    call_after_hours: int
    due_at: datetime
    channel: CheckInChannel
    status: Status
    sent_at: datetime | None
    nudged_at: datetime | None
    answer_text: str | None
    answer_digit: int | None
    tier: Tier | None
    answered_at: datetime | None
    answered_via: Via | None
    call_task_id: int | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class NewCheckIn:
    clinic_id: int
    patient_id: int
    appointment_id: int
    step_id: int | None
    position: int
    question: str
    answers: list[Answer]
    nudge_after_hours: int
    call_after_hours: int
    due_at: datetime
    channel: CheckInChannel


_COLUMNS = """id, clinic_id, patient_id, appointment_id, step_id, position, question, answers,
    nudge_after_hours, call_after_hours, due_at, channel, status, sent_at, nudged_at,
    answer_text, answer_digit, tier, answered_at, answered_via, call_task_id, created_at,
    updated_at"""


_C_COLUMNS = ", ".join("c." + c.strip() for c in _COLUMNS.split(","))


def _row(row: Any) -> CheckIn:
    data = dict(row)
    data["answers"] = answers_from_json(data["answers"])
    return CheckIn(**data)


async def insert(db: Executor, new: NewCheckIn, *, now: datetime) -> CheckIn | None:
    """None when the session already has a check-in at this position."""
    row = await db.fetchrow(
        f"""
        INSERT INTO check_in (clinic_id, patient_id, appointment_id, step_id, position, question,
            answers, nudge_after_hours, call_after_hours, due_at, channel, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, $9, $10, $11, $12, $12)
        ON CONFLICT (appointment_id, position) DO NOTHING
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant
        new.clinic_id,
        new.patient_id,
        new.appointment_id,
        new.step_id,
        new.position,
        new.question,
        json.dumps(answers_to_json(new.answers)),
        new.nudge_after_hours,
        new.call_after_hours,
        new.due_at,
        new.channel,
        now,
    )
    return None if row is None else _row(row)


async def get(db: Executor, check_in_id: int) -> CheckIn | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM check_in WHERE id = $1",  # noqa: S608 - constant
        check_in_id,
    )
    return None if row is None else _row(row)


async def lock(db: Executor, check_in_id: int) -> CheckIn | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM check_in WHERE id = $1 FOR UPDATE",  # noqa: S608 - constant
        check_in_id,
    )
    return None if row is None else _row(row)


async def for_appointment(db: Executor, appointment_id: int) -> list[CheckIn]:
    rows = await db.fetch(
        f"""SELECT {_COLUMNS} FROM check_in WHERE appointment_id = $1
        ORDER BY position""",  # noqa: S608 - constant
        appointment_id,
    )
    return [_row(r) for r in rows]


async def for_patient(db: Executor, patient_id: int) -> list[CheckIn]:
    rows = await db.fetch(
        f"""SELECT {_COLUMNS} FROM check_in WHERE patient_id = $1
        ORDER BY due_at, id""",  # noqa: S608 - constant
        patient_id,
    )
    return [_row(r) for r in rows]


async def open_for_patient(db: Executor, patient_id: int) -> list[CheckIn]:
    """The patient's check-ins still to be asked or answered, in due order."""
    rows = await db.fetch(
        f"""SELECT {_COLUMNS} FROM check_in WHERE patient_id = $1
        AND status = ANY($2::text[]) ORDER BY due_at, id""",  # noqa: S608 - constant
        patient_id,
        list(OPEN_STATUSES),
    )
    return [_row(r) for r in rows]


async def set_channel(
    db: Executor, check_in_id: int, channel: CheckInChannel, *, now: datetime
) -> None:
    await db.execute(
        "UPDATE check_in SET channel = $2, updated_at = $3 WHERE id = $1",
        check_in_id,
        channel,
        now,
    )


async def record_answer(
    db: Executor,
    check_in_id: int,
    *,
    text: str,
    digit: int | None,
    tier: Tier,
    via: Via,
    now: datetime,
) -> CheckIn | None:
    """Record the patient's answer; None when the check-in was answered already (or was
    cancelled): the first answer stands."""
    row = await db.fetchrow(
        f"""
        UPDATE check_in SET status = 'answered', answer_text = $2, answer_digit = $3, tier = $4,
               answered_via = $5, answered_at = $6, updated_at = $6
        WHERE id = $1 AND answered_at IS NULL AND status <> 'cancelled'
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant
        check_in_id,
        text,
        digit,
        tier,
        via,
        now,
    )
    return None if row is None else _row(row)


@dataclass(frozen=True)
class AskedBySms:
    check_in: CheckIn
    notification_id: int
    sent_at: datetime


async def latest_asked_by_sms(
    db: Executor, patient_ids: Sequence[int], *, since: datetime
) -> dict[int, AskedBySms]:
    """Per patient, the latest check-in asked by SMS (the question or its nudge sent since
    `since`) and not answered yet: what a reply from the patient answers."""
    rows = await db.fetch(
        f"""
        SELECT DISTINCT ON (c.patient_id) n.id AS notification_id, n.sent_at AS asked_at,
               {_C_COLUMNS}
        FROM check_in c
        JOIN notification n ON n.kind = 'check_in'
             AND (n.context ->> 'check_in_id')::bigint = c.id AND n.patient_id = c.patient_id
        WHERE c.patient_id = ANY($1::bigint[]) AND c.answered_at IS NULL
          AND c.status <> 'cancelled' AND n.channel = 'sms'
          AND n.status IN ('sent', 'delivered', 'unknown') AND n.sent_at >= $2
        ORDER BY c.patient_id, n.sent_at DESC, n.id DESC
        """,  # noqa: S608 - constant
        list(patient_ids),
        since,
    )
    found = {}
    for r in rows:
        data = dict(r)
        notification_id, asked_at = data.pop("notification_id"), data.pop("asked_at")
        found[r["patient_id"]] = AskedBySms(_row(data), notification_id, asked_at)
    return found


# -- the follow-up sweep ----------------------------------------------------------------------


@dataclass(frozen=True)
class Carrier:
    """A check-in's latest outbox row (the question or the nudge) as the sweep sees it."""

    check_in: CheckIn
    notification_id: int | None
    notification_status: str | None
    sent_at: datetime | None
    nudge: bool


async def follow_up_candidates(db: Executor, *, now: datetime, limit: int) -> list[Carrier]:
    """Open check-ins due by now, each with its latest outbox row (none for channel 'call' or
    a check-in whose row was never written), oldest first, locked (SKIP LOCKED: another
    replica's sweep takes the rest)."""
    rows = await db.fetch(
        f"""
        SELECT {_C_COLUMNS}, latest.id AS n_id, latest.status AS n_status, latest.sent_at AS n_sent,
               coalesce((latest.context ->> 'nudge')::boolean, false) AS n_nudge
        FROM check_in c
        LEFT JOIN LATERAL (
            SELECT n.id, n.status, n.sent_at, n.context FROM notification n
            WHERE n.kind = 'check_in' AND (n.context ->> 'check_in_id')::bigint = c.id
            ORDER BY n.id DESC LIMIT 1
        ) latest ON true
        WHERE c.status IN ('planned', 'sent', 'nudged') AND c.due_at <= $1
        ORDER BY c.due_at, c.id
        LIMIT $2
        FOR UPDATE OF c SKIP LOCKED
        """,  # noqa: S608 - constant
        now,
        limit,
    )
    out = []
    for r in rows:
        data = dict(r)
        n_id, n_status = data.pop("n_id"), data.pop("n_status")
        n_sent, n_nudge = data.pop("n_sent"), data.pop("n_nudge")
        out.append(Carrier(_row(data), n_id, n_status, n_sent, bool(n_nudge)))
    return out


async def mark_sent(db: Executor, check_in_id: int, *, sent_at: datetime, now: datetime) -> None:
    await db.execute(
        """UPDATE check_in SET status = 'sent', sent_at = $2, updated_at = $3
        WHERE id = $1 AND status = 'planned'""",
        check_in_id,
        sent_at,
        now,
    )


async def mark_nudged(db: Executor, check_in_id: int, *, now: datetime) -> None:
    await db.execute(
        """UPDATE check_in SET status = 'nudged', nudged_at = $2, updated_at = $2
        WHERE id = $1 AND status IN ('planned', 'sent')""",
        check_in_id,
        now,
    )


async def mark_called(
    db: Executor, check_in_id: int, *, call_task_id: int | None, now: datetime
) -> None:
    await db.execute(
        """UPDATE check_in SET status = 'called', call_task_id = $2, updated_at = $3
        WHERE id = $1 AND status IN ('planned', 'sent', 'nudged')""",
        check_in_id,
        call_task_id,
        now,
    )


async def cancel_open_for_appointment(
    db: Executor, appointment_id: int, *, now: datetime
) -> list[int]:
    """End the session's check-ins still to be asked (the completion was undone)."""
    rows = await db.fetch(
        """UPDATE check_in SET status = 'cancelled', updated_at = $2
        WHERE appointment_id = $1 AND status = 'planned' RETURNING id""",
        appointment_id,
        now,
    )
    return [r["id"] for r in rows]


async def cancel(db: Executor, check_in_id: int, *, now: datetime) -> bool:
    """End one open check-in (its patient was erased: nobody is to be asked)."""
    done = await db.fetchval(
        """UPDATE check_in SET status = 'cancelled', updated_at = $2
        WHERE id = $1 AND status IN ('planned', 'sent', 'nudged') RETURNING id""",
        check_in_id,
        now,
    )
    return done is not None
