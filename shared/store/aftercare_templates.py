"""Each treatment's aftercare template (owner of `aftercare_template`).

One row per treatment (so per clinic): the instructions, what is normal and for how long, when
to call the clinic and what is an emergency, each a list of lines or one text. A treatment
without a row gets no aftercare message (a consultation). Invariants: every write bumps
`version` and records who and when; `put` replaces the whole template (the admin API sends it
whole), so a template is never half-edited.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from shared.store import Executor


@dataclass(frozen=True)
class AftercareContent:
    """What a template says (the part staff write)."""

    instructions: list[str]
    normal_course: str
    normal_days: int
    call_when: list[str]
    emergency_signs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AftercareTemplate:
    treatment_id: int
    clinic_id: int
    content: AftercareContent
    version: int
    updated_at: datetime
    updated_by: str


_COLUMNS = """treatment_id, clinic_id, instructions, normal_course, normal_days, call_when,
    emergency_signs, version, updated_at, updated_by"""


def _template(row: asyncpg.Record) -> AftercareTemplate:
    return AftercareTemplate(
        treatment_id=row["treatment_id"],
        clinic_id=row["clinic_id"],
        content=AftercareContent(
            instructions=list(row["instructions"]),
            normal_course=row["normal_course"],
            normal_days=row["normal_days"],
            call_when=list(row["call_when"]),
            emergency_signs=list(row["emergency_signs"]),
        ),
        version=row["version"],
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )


async def get(db: Executor, treatment_id: int) -> AftercareTemplate | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM aftercare_template WHERE treatment_id = $1",  # noqa: S608
        treatment_id,
    )
    return None if row is None else _template(row)


async def lock(conn: asyncpg.Connection, treatment_id: int) -> AftercareTemplate | None:
    """Read and lock the template for the rest of the caller's transaction."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM aftercare_template WHERE treatment_id = $1 FOR UPDATE",  # noqa: S608
        treatment_id,
    )
    return None if row is None else _template(row)


async def put(
    conn: Executor,
    *,
    treatment_id: int,
    clinic_id: int,
    content: AftercareContent,
    by: str,
    now: datetime,
) -> AftercareTemplate:
    """Create the treatment's template (version 1) or replace it whole (version + 1)."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO aftercare_template AS a (treatment_id, clinic_id, instructions, normal_course,
            normal_days, call_when, emergency_signs, version, updated_at, updated_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9)
        ON CONFLICT (treatment_id) DO UPDATE SET
            instructions = excluded.instructions, normal_course = excluded.normal_course,
            normal_days = excluded.normal_days, call_when = excluded.call_when,
            emergency_signs = excluded.emergency_signs, version = a.version + 1,
            updated_at = excluded.updated_at, updated_by = excluded.updated_by
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant
        treatment_id,
        clinic_id,
        content.instructions,
        content.normal_course,
        content.normal_days,
        content.call_when,
        content.emergency_signs,
        now,
        by,
    )
    assert row is not None
    return _template(row)


async def delete(conn: Executor, treatment_id: int) -> bool:
    """Remove the treatment's template (its sessions then send no aftercare)."""
    result = await conn.execute(
        "DELETE FROM aftercare_template WHERE treatment_id = $1", treatment_id
    )
    return result != "DELETE 0"
