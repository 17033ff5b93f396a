"""Adverse events and their history (owner of `adverse_event`, `adverse_event_history`).

Invariants: every change of an event bumps its `version` and appends one history row (who,
when, which fields from what to what, why) in the same transaction (the domain,
shared/domain/adverse_events.py, does both); history rows are never updated or deleted (the
table's triggers and regimen_app's privileges). Events are medical records: erasure of the
patient leaves them, and their history, in place.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from shared.store import Executor

Tier = Literal["routine", "urgent", "emergency"]
TIERS: tuple[Tier, ...] = ("routine", "urgent", "emergency")
Source = Literal["check_in", "sms", "email", "phone", "staff"]
SOURCES: tuple[Source, ...] = ("check_in", "sms", "email", "phone", "staff")
EventStatus = Literal["open", "acknowledged", "resolved"]
STATUSES: tuple[EventStatus, ...] = ("open", "acknowledged", "resolved")
Seriousness = Literal["not_serious", "possibly_serious", "serious"]
SERIOUSNESS: tuple[Seriousness, ...] = ("not_serious", "possibly_serious", "serious")
# Grade 1 mild, 2 moderate, 3 severe, 4 life-threatening, 5 death.
GRADE_NAMES = {1: "mild", 2: "moderate", 3: "severe", 4: "life-threatening", 5: "death"}
# From this grade on, an event holds the patient's next session until a clinician clears it.
HOLDING_GRADE = 3


@dataclass(frozen=True)
class AdverseEvent:
    id: int
    clinic_id: int
    patient_id: int
    appointment_id: int | None
    check_in_id: int | None
    inbound_message_id: int | None
    lot_number: str | None
    symptoms: str
    source: Source
    tier: Tier
    grade: int | None
    seriousness: Seriousness
    status: EventStatus
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution_notes: str | None
    cleared_at: datetime | None
    cleared_by: str | None
    clearance_reason: str | None
    hold_started_at: datetime | None
    created_at: datetime
    created_by: str
    updated_at: datetime
    version: int

    @property
    def holds_next_session(self) -> bool:
        """The next-session guard: not cleared, and either an emergency (whatever its status)
        or graded severe or worse and not resolved."""
        if self.cleared_at is not None:
            return False
        if self.tier == "emergency":
            return True
        return self.grade is not None and self.grade >= HOLDING_GRADE and self.status != "resolved"


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    adverse_event_id: int
    at: datetime
    actor: str
    action: str
    changes: list[dict[str, Any]]
    reason: str


@dataclass(frozen=True)
class NewAdverseEvent:
    clinic_id: int
    patient_id: int
    appointment_id: int | None
    symptoms: str
    source: Source
    tier: Tier
    seriousness: Seriousness
    grade: int | None = None
    check_in_id: int | None = None
    inbound_message_id: int | None = None
    lot_number: str | None = None


@dataclass(frozen=True)
class EventFilter:
    status: EventStatus | None = None
    tier: Tier | None = None
    clinic_id: int | None = None
    patient_id: int | None = None
    lot_number: str | None = None
    since: datetime | None = None
    until: datetime | None = None


_COLUMNS = """id, clinic_id, patient_id, appointment_id, check_in_id, inbound_message_id,
    lot_number, symptoms, source, tier, grade, seriousness, status, acknowledged_at,
    acknowledged_by, resolved_at, resolved_by, resolution_notes, cleared_at, cleared_by,
    clearance_reason, hold_started_at, created_at, created_by, updated_at, version"""

# Fields a change may set (the domain decides which, the store only writes them).
UPDATABLE = frozenset(
    {
        "grade",
        "seriousness",
        "status",
        "acknowledged_at",
        "acknowledged_by",
        "resolved_at",
        "resolved_by",
        "resolution_notes",
        "cleared_at",
        "cleared_by",
        "clearance_reason",
        "hold_started_at",
        "lot_number",
    }
)


def _event(row: asyncpg.Record) -> AdverseEvent:
    return AdverseEvent(**dict(row))


async def insert(db: Executor, new: NewAdverseEvent, *, actor: str, now: datetime) -> AdverseEvent:
    row = await db.fetchrow(
        f"""
        INSERT INTO adverse_event (clinic_id, patient_id, appointment_id, check_in_id,
            inbound_message_id, lot_number, symptoms, source, tier, grade, seriousness, status,
            created_at, created_by, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'open', $12, $13, $12)
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant
        new.clinic_id,
        new.patient_id,
        new.appointment_id,
        new.check_in_id,
        new.inbound_message_id,
        new.lot_number,
        new.symptoms,
        new.source,
        new.tier,
        new.grade,
        new.seriousness,
        now,
        actor,
    )
    assert row is not None
    return _event(row)


async def get(db: Executor, event_id: int) -> AdverseEvent | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM adverse_event WHERE id = $1",  # noqa: S608 - constant
        event_id,
    )
    return None if row is None else _event(row)


async def lock(conn: asyncpg.Connection, event_id: int) -> AdverseEvent | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM adverse_event WHERE id = $1 FOR UPDATE",  # noqa: S608
        event_id,
    )
    return None if row is None else _event(row)


async def update(
    conn: asyncpg.Connection, event_id: int, values: dict[str, Any], *, now: datetime
) -> AdverseEvent:
    """Set `values` (names from UPDATABLE) on a row the caller has locked; bumps the version."""
    unknown = set(values) - UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    names = sorted(values)
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=3))
    row = await conn.fetchrow(
        f"""
        UPDATE adverse_event SET {sets}, updated_at = $2, version = version + 1
        WHERE id = $1 RETURNING {_COLUMNS}
        """,  # noqa: S608 - names are checked against UPDATABLE
        event_id,
        now,
        *(values[name] for name in names),
    )
    assert row is not None
    return _event(row)


async def append_history(
    db: Executor,
    event_id: int,
    *,
    at: datetime,
    actor: str,
    action: str,
    changes: Sequence[dict[str, Any]],
    reason: str,
) -> int:
    value = await db.fetchval(
        """
        INSERT INTO adverse_event_history (adverse_event_id, at, actor, action, changes, reason)
        VALUES ($1, $2, $3, $4, $5::jsonb, $6)
        RETURNING id
        """,
        event_id,
        at,
        actor,
        action,
        json.dumps(list(changes), default=str),
        reason,
    )
    return int(value)


def _history(row: asyncpg.Record) -> HistoryEntry:
    data = dict(row)
    changes = data["changes"]
    data["changes"] = json.loads(changes) if isinstance(changes, str) else list(changes)
    return HistoryEntry(**data)


async def history(db: Executor, event_id: int) -> list[HistoryEntry]:
    rows = await db.fetch(
        """SELECT id, adverse_event_id, at, actor, action, changes, reason
        FROM adverse_event_history WHERE adverse_event_id = $1 ORDER BY id""",
        event_id,
    )
    return [_history(r) for r in rows]


async def history_many(db: Executor, event_ids: Sequence[int]) -> dict[int, list[HistoryEntry]]:
    rows = await db.fetch(
        """SELECT id, adverse_event_id, at, actor, action, changes, reason
        FROM adverse_event_history WHERE adverse_event_id = ANY($1::bigint[]) ORDER BY id""",
        list(event_ids),
    )
    out: dict[int, list[HistoryEntry]] = {i: [] for i in event_ids}
    for row in rows:
        entry = _history(row)
        out.setdefault(entry.adverse_event_id, []).append(entry)
    return out


_FILTER = """
    ($1::text IS NULL OR status = $1)
    AND ($2::text IS NULL OR tier = $2)
    AND ($3::bigint IS NULL OR clinic_id = $3)
    AND ($4::bigint IS NULL OR patient_id = $4)
    AND ($5::text IS NULL OR lot_number = $5)
    AND ($6::timestamptz IS NULL OR created_at >= $6)
    AND ($7::timestamptz IS NULL OR created_at < $7)
"""


def _filter_args(f: EventFilter) -> tuple[Any, ...]:
    return (f.status, f.tier, f.clinic_id, f.patient_id, f.lot_number, f.since, f.until)


async def list_page(
    db: Executor,
    where: EventFilter,
    *,
    after: tuple[datetime, int] | None,
    limit: int,
) -> list[AdverseEvent]:
    """Events newest first, after the event whose (created_at, id) is `after`."""
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM adverse_event
        WHERE {_FILTER}
          AND ($8::timestamptz IS NULL OR (created_at, id) < ($8, $9::bigint))
        ORDER BY created_at DESC, id DESC
        LIMIT $10
        """,  # noqa: S608 - constant
        *_filter_args(where),
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_event(r) for r in rows]


async def for_patient(db: Executor, patient_id: int) -> list[AdverseEvent]:
    """Every event of the patient, oldest first (access requests, the safety timeline)."""
    rows = await db.fetch(
        f"""SELECT {_COLUMNS} FROM adverse_event WHERE patient_id = $1
        ORDER BY created_at, id""",  # noqa: S608 - constant
        patient_id,
    )
    return [_event(r) for r in rows]


async def holding_for_patient(db: Executor, patient_id: int) -> list[AdverseEvent]:
    """The patient's events that hold their next session (AdverseEvent.holds_next_session),
    oldest first. The SQL and the property say the same thing."""
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM adverse_event
        WHERE patient_id = $1 AND cleared_at IS NULL
          AND (tier = 'emergency' OR (grade >= $2 AND status <> 'resolved'))
        ORDER BY created_at, id
        """,  # noqa: S608 - constant
        patient_id,
        HOLDING_GRADE,
    )
    return [_event(r) for r in rows]


async def held_patients(
    db: Executor, patient_ids: Sequence[int], *, since: Sequence[datetime]
) -> set[int]:
    """Of `patient_ids` (each with its `since`), those whose delay is an adverse-event hold: an
    event that holds their next session now, or one that held it (hold_started_at set) and was
    cleared, created at or after their `since` (the last session of the course)."""
    rows = await db.fetch(
        """
        SELECT DISTINCT w.patient_id
        FROM unnest($1::bigint[], $2::timestamptz[]) AS w(patient_id, since)
        JOIN adverse_event e ON e.patient_id = w.patient_id
        WHERE (e.cleared_at IS NULL
               AND (e.tier = 'emergency' OR (e.grade >= $3 AND e.status <> 'resolved')))
           OR (e.hold_started_at IS NOT NULL AND e.created_at >= w.since)
        """,
        list(patient_ids),
        list(since),
        HOLDING_GRADE,
    )
    return {int(r["patient_id"]) for r in rows}


async def clearance_since(db: Executor, patient_id: int, since: datetime) -> AdverseEvent | None:
    """The latest event of the patient created at or after `since` (their last session) that
    held their next session and no longer does (a clinician cleared it, or resolved a graded
    one): the clinician's approval of the delay since that session. None when there is none."""
    row = await db.fetchrow(
        f"""
        SELECT {_COLUMNS} FROM adverse_event
        WHERE patient_id = $1 AND hold_started_at IS NOT NULL AND created_at >= $2
          AND NOT (cleared_at IS NULL
                   AND (tier = 'emergency' OR (grade >= $3 AND status <> 'resolved')))
        ORDER BY updated_at DESC, id DESC LIMIT 1
        """,  # noqa: S608 - constant
        patient_id,
        since,
        HOLDING_GRADE,
    )
    return None if row is None else _event(row)


async def count_for_patient(db: Executor, patient_id: int) -> int:
    return int(
        await db.fetchval("SELECT count(*) FROM adverse_event WHERE patient_id = $1", patient_id)
    )
