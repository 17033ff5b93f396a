"""The care team (owner of `care_team_member`, `on_call_shift`, `escalation_step`,
`alert_settings`): the staff who receive alerts, who is on call when, each clinic's escalation
list, and its alert timings.

Invariants: an escalation list is only ever written whole (`replace_escalation`), so no reader
sees half of one; "who is on call" at an instant is the active member of the shift that started
last among those covering it (a handover may overlap); a clinic without `alert_settings` uses the
column defaults (clinical-defaults.md: 15 minutes, call-back 1 h).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from shared.store import Executor, affected

Role = Literal["clinician", "front_desk", "admin"]
ROLES: tuple[Role, ...] = ("clinician", "front_desk", "admin")


@dataclass(frozen=True)
class Member:
    """One `care_team_member` row."""

    id: int
    clinic_id: int
    name: str
    role: Role
    mobile: str | None
    email: str | None
    active: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class MemberFields:
    name: str
    role: Role
    mobile: str | None
    email: str | None
    active: bool = True


@dataclass(frozen=True)
class Shift:
    """One `on_call_shift` row."""

    id: int
    clinic_id: int
    member_id: int
    starts_at: datetime
    ends_at: datetime
    created_at: datetime


@dataclass(frozen=True)
class Step:
    """One `escalation_step`: a member, or whoever is on call (`on_call`, member_id None)."""

    position: int
    member_id: int | None
    on_call: bool


@dataclass(frozen=True)
class AlertSettings:
    clinic_id: int
    escalate_after_minutes: int
    callback_target_minutes: int


_MEMBER = "id, clinic_id, name, role, mobile, email, active, created_at, updated_at"
_SHIFT = "id, clinic_id, member_id, starts_at, ends_at, created_at"


def _member(row: asyncpg.Record) -> Member:
    return Member(**dict(row))


# -- members --------------------------------------------------------------------------------------


async def insert_member(
    db: Executor, clinic_id: int, fields: MemberFields, *, now: datetime
) -> Member:
    row = await db.fetchrow(
        f"""
        INSERT INTO care_team_member (clinic_id, name, role, mobile, email, active, created_at,
                                      updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
        RETURNING {_MEMBER}
        """,  # noqa: S608 - constant
        clinic_id,
        fields.name,
        fields.role,
        fields.mobile,
        fields.email,
        fields.active,
        now,
    )
    assert row is not None
    return _member(row)


async def update_member(
    db: Executor, member_id: int, fields: MemberFields, *, now: datetime
) -> Member | None:
    row = await db.fetchrow(
        f"""
        UPDATE care_team_member SET name = $2, role = $3, mobile = $4, email = $5, active = $6,
               updated_at = $7
        WHERE id = $1
        RETURNING {_MEMBER}
        """,  # noqa: S608 - constant
        member_id,
        fields.name,
        fields.role,
        fields.mobile,
        fields.email,
        fields.active,
        now,
    )
    return None if row is None else _member(row)


async def get_member(db: Executor, member_id: int) -> Member | None:
    row = await db.fetchrow(
        f"SELECT {_MEMBER} FROM care_team_member WHERE id = $1",  # noqa: S608 - constant
        member_id,
    )
    return None if row is None else _member(row)


async def get_members(db: Executor, member_ids: Sequence[int]) -> dict[int, Member]:
    rows = await db.fetch(
        f"SELECT {_MEMBER} FROM care_team_member WHERE id = ANY($1::bigint[])",  # noqa: S608
        list(member_ids),
    )
    return {row["id"]: _member(row) for row in rows}


async def members_of(
    db: Executor, clinic_id: int, *, after_id: int | None = None, limit: int | None = None
) -> list[Member]:
    """The clinic's members by id (keyset: after `after_id`, at most `limit`)."""
    rows = await db.fetch(
        f"""
        SELECT {_MEMBER} FROM care_team_member
        WHERE clinic_id = $1 AND ($2::bigint IS NULL OR id > $2)
        ORDER BY id LIMIT $3
        """,  # noqa: S608 - constant
        clinic_id,
        after_id,
        limit,
    )
    return [_member(row) for row in rows]


async def delete_member(db: Executor, member_id: int) -> bool:
    """Delete a member with no alert history; False when none was deleted (a member who was
    alerted stays, for the record: deactivate them instead)."""
    status = await db.execute(
        """
        DELETE FROM care_team_member m WHERE id = $1
          AND NOT EXISTS (SELECT 1 FROM staff_alert_notification n WHERE n.member_id = m.id)
          AND NOT EXISTS (SELECT 1 FROM staff_alert a WHERE a.recipient_member_id = m.id)
        """,
        member_id,
    )
    return affected(status) == 1


async def admins_of(db: Executor, clinic_id: int) -> list[Member]:
    rows = await db.fetch(
        f"""
        SELECT {_MEMBER} FROM care_team_member
        WHERE clinic_id = $1 AND role = 'admin' AND active ORDER BY id
        """,  # noqa: S608 - constant
        clinic_id,
    )
    return [_member(row) for row in rows]


# -- the on-call rota -----------------------------------------------------------------------------


async def insert_shift(
    db: Executor,
    clinic_id: int,
    *,
    member_id: int,
    starts_at: datetime,
    ends_at: datetime,
    now: datetime,
) -> Shift:
    row = await db.fetchrow(
        f"""
        INSERT INTO on_call_shift (clinic_id, member_id, starts_at, ends_at, created_at)
        VALUES ($1, $2, $3, $4, $5)
        RETURNING {_SHIFT}
        """,  # noqa: S608 - constant
        clinic_id,
        member_id,
        starts_at,
        ends_at,
        now,
    )
    assert row is not None
    return Shift(**dict(row))


async def shifts_of(
    db: Executor,
    clinic_id: int,
    *,
    ending_after: datetime,
    after_id: int | None = None,
    limit: int | None = None,
) -> list[Shift]:
    """Shifts ending after `ending_after`, by id (keyset: after `after_id`, at most `limit`)."""
    rows = await db.fetch(
        f"""
        SELECT {_SHIFT} FROM on_call_shift
        WHERE clinic_id = $1 AND ends_at > $2 AND ($3::bigint IS NULL OR id > $3)
        ORDER BY id LIMIT $4
        """,  # noqa: S608 - constant
        clinic_id,
        ending_after,
        after_id,
        limit,
    )
    return [Shift(**dict(row)) for row in rows]


async def delete_shift(db: Executor, clinic_id: int, shift_id: int) -> bool:
    status = await db.execute(
        "DELETE FROM on_call_shift WHERE id = $1 AND clinic_id = $2", shift_id, clinic_id
    )
    return affected(status) == 1


async def on_call_at(db: Executor, clinic_id: int, at: datetime) -> Member | None:
    """The active member on call at `at`: of the shifts covering it, the one that started last."""
    row = await db.fetchrow(
        """
        SELECT m.id, m.clinic_id, m.name, m.role, m.mobile, m.email, m.active, m.created_at,
               m.updated_at
        FROM on_call_shift s JOIN care_team_member m ON m.id = s.member_id
        WHERE s.clinic_id = $1 AND s.starts_at <= $2 AND $2 < s.ends_at AND m.active
        ORDER BY s.starts_at DESC, s.id DESC
        LIMIT 1
        """,
        clinic_id,
        at,
    )
    return None if row is None else _member(row)


# -- the escalation list --------------------------------------------------------------------------


async def escalation_of(db: Executor, clinic_id: int) -> list[Step]:
    rows = await db.fetch(
        """
        SELECT position, member_id, on_call FROM escalation_step
        WHERE clinic_id = $1 ORDER BY position
        """,
        clinic_id,
    )
    return [Step(**dict(row)) for row in rows]


async def replace_escalation(
    conn: asyncpg.Connection, clinic_id: int, steps: Sequence[Step]
) -> list[Step]:
    """Write the clinic's whole list (positions 0..n-1, in the given order)."""
    await conn.execute("DELETE FROM escalation_step WHERE clinic_id = $1", clinic_id)
    await conn.executemany(
        """
        INSERT INTO escalation_step (clinic_id, position, member_id, on_call)
        VALUES ($1, $2, $3, $4)
        """,
        [(clinic_id, i, s.member_id, s.on_call) for i, s in enumerate(steps)],
    )
    return await escalation_of(conn, clinic_id)


# -- timings and clinic hours ---------------------------------------------------------------------


async def settings_of(db: Executor, clinic_id: int) -> AlertSettings:
    """The clinic's alert timings; the column defaults when it has set none."""
    row = await db.fetchrow(
        """
        SELECT $1::bigint AS clinic_id,
               coalesce(s.escalate_after_minutes, d.escalate_after_minutes)
                   AS escalate_after_minutes,
               coalesce(s.callback_target_minutes, d.callback_target_minutes)
                   AS callback_target_minutes
        FROM (SELECT 15 AS escalate_after_minutes, 60 AS callback_target_minutes) AS d
        LEFT JOIN alert_settings s ON s.clinic_id = $1
        """,
        clinic_id,
    )
    assert row is not None
    return AlertSettings(**dict(row))


async def save_settings(db: Executor, settings: AlertSettings) -> AlertSettings:
    await db.execute(
        """
        INSERT INTO alert_settings (clinic_id, escalate_after_minutes, callback_target_minutes)
        VALUES ($1, $2, $3)
        ON CONFLICT (clinic_id) DO UPDATE
            SET escalate_after_minutes = EXCLUDED.escalate_after_minutes,
                callback_target_minutes = EXCLUDED.callback_target_minutes
        """,
        settings.clinic_id,
        settings.escalate_after_minutes,
        settings.callback_target_minutes,
    )
    return settings


async def in_clinic_hours(db: Executor, clinic_id: int, weekday: int, local_time: object) -> bool:
    """Whether any active practitioner of the clinic works at this local weekday (ISO) and time:
    the clinic's hours are its practitioners' working hours."""
    return bool(
        await db.fetchval(
            """
            SELECT EXISTS (
                SELECT 1 FROM working_hours w JOIN practitioner p ON p.id = w.practitioner_id
                WHERE p.clinic_id = $1 AND p.active AND w.weekday = $2
                  AND w.starts <= $3::time AND $3::time < w.ends)
            """,
            clinic_id,
            weekday,
            local_time,
        )
    )
