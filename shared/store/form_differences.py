"""What a public booking form said about an existing patient (owner of `form_difference`).

The form matches a returning patient by mobile or email, which a stranger may know; so nothing it
sends changes that patient's record. The submitted values that differ from the record (and the
consents ticked) are kept here for staff to compare with the patient. Rows are deleted when the
patient is erased: they hold contact data and medical answers that may not even be theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.store import Executor, affected


@dataclass(frozen=True)
class FormDifference:
    id: int
    clinic_id: int
    patient_id: int
    hold_id: int | None
    appointment_ids: list[int]
    submitted: dict[str, Any]
    created_at: datetime
    reviewed_at: datetime | None
    reviewed_by: str | None
    review_note: str


_COLUMNS = """id, clinic_id, patient_id, hold_id, appointment_ids, submitted, created_at,
    reviewed_at, reviewed_by, review_note"""


def _row(record: asyncpg.Record) -> FormDifference:
    data = dict(record)
    data["appointment_ids"] = list(data["appointment_ids"])
    return FormDifference(**data)


async def insert(
    conn: Executor,
    *,
    clinic_id: int,
    patient_id: int,
    hold_id: int | None,
    appointment_ids: Sequence[int],
    submitted: dict[str, Any],
    now: datetime,
) -> int:
    return int(
        await conn.fetchval(
            """
            INSERT INTO form_difference (clinic_id, patient_id, hold_id, appointment_ids,
                                         submitted, created_at)
            VALUES ($1, $2, $3, $4, $5, $6)
            RETURNING id
            """,
            clinic_id,
            patient_id,
            hold_id,
            list(appointment_ids),
            submitted,
            now,
        )
    )


async def for_patient(db: Executor, patient_id: int) -> list[FormDifference]:
    """Newest first."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM form_difference WHERE patient_id = $1 "  # noqa: S608 - constant
        "ORDER BY created_at DESC, id DESC",
        patient_id,
    )
    return [_row(r) for r in rows]


async def get(db: Executor, difference_id: int) -> FormDifference | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM form_difference WHERE id = $1",  # noqa: S608 - constant
        difference_id,
    )
    return None if row is None else _row(row)


async def mark_reviewed(
    conn: Executor, difference_id: int, *, by: str, note: str, now: datetime
) -> FormDifference | None:
    """Record that staff compared the form with the patient; None if unknown or done already."""
    row = await conn.fetchrow(
        f"""
        UPDATE form_difference SET reviewed_at = $2, reviewed_by = $3, review_note = $4
        WHERE id = $1 AND reviewed_at IS NULL
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant
        difference_id,
        now,
        by,
        note,
    )
    return None if row is None else _row(row)


async def delete_for_patient(conn: Executor, patient_id: int) -> int:
    """Erasure: every row about this patient goes. Returns how many."""
    result = await conn.execute("DELETE FROM form_difference WHERE patient_id = $1", patient_id)
    return affected(result)


async def list_page(
    db: Executor, *, open_only: bool, patient_id: int | None, after_id: int | None, limit: int
) -> list[FormDifference]:
    """Oldest first (the longest waiting on top), keyset-paginated on id."""
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM form_difference
        WHERE (NOT $1 OR reviewed_at IS NULL)
          AND ($2::bigint IS NULL OR patient_id = $2)
          AND ($3::bigint IS NULL OR id > $3)
        ORDER BY id
        LIMIT $4
        """,  # noqa: S608 - constant
        open_only,
        patient_id,
        after_id,
        limit,
    )
    return [_row(r) for r in rows]
