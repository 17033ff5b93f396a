"""Session records (owner of `session_record` and `session_record_history`).

Invariants:
* At most one record per appointment (UNIQUE), written only for a completed session.
* Every write (the first one too) bumps `version` and adds the history row of that version in
  the same transaction, with who wrote it, when and why; the history is append-only (the table
  refuses UPDATE and DELETE, and the services' role lacks the privilege), so a correction keeps
  what the record said before.
* `lot_number` is stored trimmed as written; the recall search compares it case-insensitively.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from shared.store import Executor


@dataclass(frozen=True)
class RecordFields:
    """What a clinician writes about a session (which fields a treatment needs is the domain's
    rule; `performed_by` is filled in before anything is stored)."""

    performed_by: int | None = None
    product: str | None = None
    formulation: str | None = None
    lot_number: str | None = None
    lot_expiry: date | None = None
    injection_areas: list[str] = field(default_factory=list)
    depth_mm: float | None = None
    needle_length_mm: float | None = None
    volume_ml: float | None = None
    anaesthetic: str | None = None
    notes: str = ""
    expired_lot_acknowledged: bool = False

    def as_json(self) -> dict[str, Any]:
        values = asdict(self)
        if self.lot_expiry is not None:
            values["lot_expiry"] = self.lot_expiry.isoformat()
        return values


FIELD_NAMES = tuple(RecordFields.__dataclass_fields__)


@dataclass(frozen=True)
class SessionRecord:
    id: int
    appointment_id: int
    fields: RecordFields
    recorded_by: str
    recorded_at: datetime
    version: int
    created_at: datetime


@dataclass(frozen=True)
class HistoryEntry:
    version: int
    at: datetime
    actor: str
    reason: str
    record: dict[str, Any]


_COLUMNS = """r.id, r.appointment_id, r.product, r.formulation, r.lot_number, r.lot_expiry,
    r.injection_areas, r.depth_mm, r.needle_length_mm, r.volume_ml, r.anaesthetic, r.notes,
    r.performed_by, r.expired_lot_acknowledged, r.recorded_by, r.recorded_at, r.version,
    r.created_at"""


def _number(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _record(row: asyncpg.Record) -> SessionRecord:
    return SessionRecord(
        id=row["id"],
        appointment_id=row["appointment_id"],
        fields=RecordFields(
            performed_by=row["performed_by"],
            product=row["product"],
            formulation=row["formulation"],
            lot_number=row["lot_number"],
            lot_expiry=row["lot_expiry"],
            injection_areas=list(row["injection_areas"]),
            depth_mm=_number(row["depth_mm"]),
            needle_length_mm=_number(row["needle_length_mm"]),
            volume_ml=_number(row["volume_ml"]),
            anaesthetic=row["anaesthetic"],
            notes=row["notes"],
            expired_lot_acknowledged=row["expired_lot_acknowledged"],
        ),
        recorded_by=row["recorded_by"],
        recorded_at=row["recorded_at"],
        version=row["version"],
        created_at=row["created_at"],
    )


async def for_appointment(db: Executor, appointment_id: int) -> SessionRecord | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM session_record r WHERE r.appointment_id = $1",  # noqa: S608
        appointment_id,
    )
    return None if row is None else _record(row)


async def lock_for_appointment(
    conn: asyncpg.Connection, appointment_id: int
) -> SessionRecord | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM session_record r WHERE r.appointment_id = $1 "  # noqa: S608
        "FOR UPDATE",
        appointment_id,
    )
    return None if row is None else _record(row)


async def for_appointments(
    db: Executor, appointment_ids: Sequence[int]
) -> dict[int, SessionRecord]:
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM session_record r "  # noqa: S608
        "WHERE r.appointment_id = ANY($1::bigint[])",
        list(appointment_ids),
    )
    return {row["appointment_id"]: _record(row) for row in rows}


def _values(f: RecordFields) -> tuple[Any, ...]:
    assert f.performed_by is not None  # the domain defaults it to the appointment's practitioner
    return (
        f.product,
        f.formulation,
        f.lot_number,
        f.lot_expiry,
        list(f.injection_areas),
        f.depth_mm,
        f.needle_length_mm,
        f.volume_ml,
        f.anaesthetic,
        f.notes,
        f.performed_by,
        f.expired_lot_acknowledged,
    )


async def _add_history(
    conn: asyncpg.Connection, saved: SessionRecord, *, actor: str, reason: str
) -> None:
    await conn.execute(
        """
        INSERT INTO session_record_history (session_record_id, appointment_id, version, at,
                                            actor, reason, record)
        VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
        """,
        saved.id,
        saved.appointment_id,
        saved.version,
        saved.recorded_at,
        actor,
        reason,
        json.dumps(saved.fields.as_json()),
    )


async def insert(
    conn: asyncpg.Connection,
    appointment_id: int,
    fields: RecordFields,
    *,
    actor: str,
    reason: str,
    now: datetime,
) -> SessionRecord:
    """The appointment's first record (version 1) and its history row."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO session_record AS r (appointment_id, product, formulation, lot_number,
            lot_expiry, injection_areas, depth_mm, needle_length_mm, volume_ml, anaesthetic,
            notes, performed_by, expired_lot_acknowledged, recorded_by, recorded_at, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant columns
        appointment_id,
        *_values(fields),
        actor,
        now,
    )
    assert row is not None  # INSERT/UPDATE ... RETURNING of a row that exists
    saved = _record(row)
    await _add_history(conn, saved, actor=actor, reason=reason)
    return saved


async def replace(
    conn: asyncpg.Connection,
    current: SessionRecord,
    fields: RecordFields,
    *,
    actor: str,
    reason: str,
    now: datetime,
) -> SessionRecord:
    """A correction of a locked record: the new values as the next version, with its history
    row (the earlier versions stay in the history)."""
    row = await conn.fetchrow(
        f"""
        UPDATE session_record AS r SET product = $2, formulation = $3, lot_number = $4,
            lot_expiry = $5, injection_areas = $6, depth_mm = $7, needle_length_mm = $8,
            volume_ml = $9, anaesthetic = $10, notes = $11, performed_by = $12,
            expired_lot_acknowledged = $13, recorded_by = $14, recorded_at = $15,
            version = version + 1
        WHERE id = $1
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant columns
        current.id,
        *_values(fields),
        actor,
        now,
    )
    assert row is not None  # INSERT/UPDATE ... RETURNING of a row that exists
    saved = _record(row)
    await _add_history(conn, saved, actor=actor, reason=reason)
    return saved


async def history(db: Executor, appointment_id: int) -> list[HistoryEntry]:
    """Every version of the appointment's record, oldest first."""
    rows = await db.fetch(
        """
        SELECT version, at, actor, reason, record FROM session_record_history
        WHERE appointment_id = $1 ORDER BY version
        """,
        appointment_id,
    )
    return [
        HistoryEntry(r["version"], r["at"], r["actor"], r["reason"], json.loads(r["record"]))
        for r in rows
    ]


async def history_of_patient(db: Executor, patient_id: int) -> list[tuple[int, HistoryEntry]]:
    """(appointment id, entry) of every version of the patient's records, by appointment and
    version."""
    rows = await db.fetch(
        """
        SELECT h.appointment_id, h.version, h.at, h.actor, h.reason, h.record
        FROM session_record_history h JOIN appointment a ON a.id = h.appointment_id
        WHERE a.patient_id = $1
        ORDER BY h.appointment_id, h.version
        """,
        patient_id,
    )
    return [
        (
            r["appointment_id"],
            HistoryEntry(r["version"], r["at"], r["actor"], r["reason"], json.loads(r["record"])),
        )
        for r in rows
    ]


@dataclass(frozen=True)
class RecallHit:
    """One session that received the lot, with what reaching its patient depends on."""

    appointment_id: int
    clinic_id: int
    patient_id: int
    first_name: str
    last_name: str
    mobile: str | None
    email: str | None
    sms_opted_out: bool
    erased: bool
    care_sms: bool
    care_email: bool
    starts_at: datetime
    time_zone: str
    treatment_name: str
    product: str | None
    lot_number: str
    lot_expiry: date | None


async def recall_page(
    db: Executor,
    *,
    lot_number: str,
    product: str | None,
    clinic_id: int | None,
    first_day: date | None,
    last_day: date | None,
    after: tuple[datetime, int] | None,
    limit: int,
) -> list[RecallHit]:
    """The sessions whose record names `lot_number` (trimmed, any case), newest session first,
    after the keyset (starts_at, appointment id) `after`. Dates are each clinic's local dates;
    `product` matches case-insensitively too."""
    rows = await db.fetch(
        """
        SELECT a.id AS appointment_id, a.clinic_id, p.id AS patient_id, p.first_name,
               p.last_name, p.mobile, p.email, p.sms_opted_out_at IS NOT NULL AS sms_opted_out,
               p.erased_at IS NOT NULL AS erased, lower(a.during) AS starts_at,
               c.time_zone, t.name AS treatment_name, r.product, r.lot_number, r.lot_expiry,
               COALESCE((SELECT pc.granted FROM patient_consent pc
                         WHERE pc.patient_id = p.id AND pc.kind = 'care_sms'
                         ORDER BY pc.recorded_at DESC, pc.id DESC LIMIT 1), false) AS care_sms,
               COALESCE((SELECT pc.granted FROM patient_consent pc
                         WHERE pc.patient_id = p.id AND pc.kind = 'care_email'
                         ORDER BY pc.recorded_at DESC, pc.id DESC LIMIT 1), false) AS care_email
        FROM session_record r
        JOIN appointment a ON a.id = r.appointment_id
        JOIN patient p ON p.id = a.patient_id
        JOIN clinic c ON c.id = a.clinic_id
        JOIN treatment t ON t.id = a.treatment_id
        WHERE lower(r.lot_number) = lower($1)
          AND ($2::text IS NULL OR lower(r.product) = lower($2))
          AND ($3::bigint IS NULL OR a.clinic_id = $3)
          AND ($4::date IS NULL OR (lower(a.during) AT TIME ZONE c.time_zone)::date >= $4)
          AND ($5::date IS NULL OR (lower(a.during) AT TIME ZONE c.time_zone)::date <= $5)
          AND ($6::timestamptz IS NULL OR (lower(a.during), a.id) < ($6, $7::bigint))
        ORDER BY lower(a.during) DESC, a.id DESC
        LIMIT $8
        """,
        lot_number.strip(),
        product.strip() if product is not None else None,
        clinic_id,
        first_day,
        last_day,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [RecallHit(**dict(row)) for row in rows]
