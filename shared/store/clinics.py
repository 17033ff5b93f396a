"""Clinics and their policies (owner of `clinic`).

Invariants: every setting is written at once (`ClinicSettings` is the whole set, for an insert
and for an update), and each update bumps `version`, so an update made against an older read
is refused (None) rather than overwriting someone else's change. `sms_countries` NULL means the
clinic texts only its own region (`sms_countries_of`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, time
from typing import Any

import asyncpg

from shared.store import Executor


@dataclass(frozen=True)
class Clinic:
    """One `clinic` row."""

    id: int
    name: str
    time_zone: str
    phone: str
    address: str
    region: str
    brand_colour: str
    quiet_start: time
    quiet_end: time
    min_notice_minutes: int
    horizon_days: int
    cancellation_notice_hours: int
    hold_minutes: int
    no_show_grace_minutes: int
    slot_step_minutes: int
    sms_countries: list[str] | None
    unconfirmed_call_hours: int
    version: int
    created_at: datetime


_COLUMNS = """id, name, time_zone, phone, address, region, brand_colour, quiet_start, quiet_end,
    min_notice_minutes, horizon_days, cancellation_notice_hours, hold_minutes,
    no_show_grace_minutes, slot_step_minutes, sms_countries, unconfirmed_call_hours, version,
    created_at"""


def _clinic(row: asyncpg.Record) -> Clinic:
    data = dict(row)
    if data["sms_countries"] is not None:
        data["sms_countries"] = list(data["sms_countries"])
    return Clinic(**data)


@dataclass(frozen=True)
class ClinicSettings:
    """Everything about a clinic that staff may set: the insert object, and the whole set an
    update writes. The defaults are the schema's (migrations 0002, 0003 and 0010)."""

    name: str
    time_zone: str
    phone: str
    address: str
    region: str
    brand_colour: str = "#1f5f8b"
    quiet_start: time = time(8)
    quiet_end: time = time(20)
    min_notice_minutes: int = 120
    horizon_days: int = 180
    cancellation_notice_hours: int = 24
    hold_minutes: int = 10
    no_show_grace_minutes: int = 30
    slot_step_minutes: int = 15
    # None: the clinic texts only its own region (see sms_countries_of).
    sms_countries: Sequence[str] | None = None
    # A session asked to confirm (72 h reminder) and not confirmed this many hours before its
    # start goes on the call list (services/scheduler/call_list.py).
    unconfirmed_call_hours: int = 48


def settings_of(clinic: Clinic) -> ClinicSettings:
    """A clinic's current settings: the whole set an update writes, to change a few of."""
    return ClinicSettings(**{f.name: getattr(clinic, f.name) for f in fields(ClinicSettings)})


def sms_countries_of(stored: Sequence[str] | None, region: str) -> tuple[str, ...]:
    """The countries a clinic sends SMS to: those it chose, else only its own region."""
    return tuple(stored) if stored else (region,)


def _settings_values(s: ClinicSettings) -> tuple[Any, ...]:
    """The settings in the column order of the INSERT and UPDATE below."""
    return (
        s.name,
        s.time_zone,
        s.phone,
        s.address,
        s.region,
        s.brand_colour,
        s.quiet_start,
        s.quiet_end,
        s.min_notice_minutes,
        s.horizon_days,
        s.cancellation_notice_hours,
        s.hold_minutes,
        s.no_show_grace_minutes,
        s.slot_step_minutes,
        None if s.sms_countries is None else list(s.sms_countries),
        s.unconfirmed_call_hours,
    )


async def count(db: Executor) -> int:
    return int(await db.fetchval("SELECT count(*) FROM clinic"))


async def exists(db: Executor, clinic_id: int) -> bool:
    return bool(await db.fetchval("SELECT EXISTS (SELECT 1 FROM clinic WHERE id = $1)", clinic_id))


async def lock_table(conn: asyncpg.Connection) -> None:
    """Until the caller's transaction ends, no one else adds a clinic (two `regimen dev`
    starting at once must not seed the demo clinic twice)."""
    await conn.execute("LOCK TABLE clinic IN EXCLUSIVE MODE")


async def first(db: Executor) -> Clinic | None:
    """The oldest clinic (the pages of a single-clinic install show it)."""
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM clinic ORDER BY id LIMIT 1")  # noqa: S608
    return None if row is None else _clinic(row)


async def get(db: Executor, clinic_id: int) -> Clinic | None:
    return (await get_many(db, [clinic_id])).get(clinic_id)


async def get_many(db: Executor, clinic_ids: Sequence[int]) -> dict[int, Clinic]:
    """id → clinic for those of `clinic_ids` that exist, in one query."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM clinic WHERE id = ANY($1::bigint[])",  # noqa: S608 - constant
        list(set(clinic_ids)),
    )
    return {row["id"]: _clinic(row) for row in rows}


async def lock(conn: asyncpg.Connection, clinic_id: int) -> Clinic | None:
    """Read and lock a clinic for the rest of the caller's transaction."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM clinic WHERE id = $1 FOR UPDATE",  # noqa: S608 - constant
        clinic_id,
    )
    return None if row is None else _clinic(row)


async def list_page(db: Executor, *, after_id: int | None, limit: int) -> list[Clinic]:
    """Oldest first, keyset-paginated on id."""
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM clinic
        WHERE ($1::bigint IS NULL OR id > $1)
        ORDER BY id
        LIMIT $2
        """,  # noqa: S608 - constant
        after_id,
        limit,
    )
    return [_clinic(r) for r in rows]


async def insert(db: Executor, settings: ClinicSettings, *, now: datetime) -> Clinic:
    row = await db.fetchrow(
        f"""
        INSERT INTO clinic (name, time_zone, phone, address, region, brand_colour, quiet_start,
            quiet_end, min_notice_minutes, horizon_days, cancellation_notice_hours, hold_minutes,
            no_show_grace_minutes, slot_step_minutes, sms_countries, unconfirmed_call_hours,
            created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant
        *_settings_values(settings),
        now,
    )
    assert row is not None
    return _clinic(row)


async def update(
    db: Executor, clinic_id: int, *, expected_version: int, settings: ClinicSettings
) -> Clinic | None:
    """Write every setting and bump the version; None if the row is gone or was changed since
    `expected_version` was read."""
    row = await db.fetchrow(
        f"""
        UPDATE clinic SET name = $3, time_zone = $4, phone = $5, address = $6, region = $7,
               brand_colour = $8, quiet_start = $9, quiet_end = $10, min_notice_minutes = $11,
               horizon_days = $12, cancellation_notice_hours = $13, hold_minutes = $14,
               no_show_grace_minutes = $15, slot_step_minutes = $16, sms_countries = $17,
               unconfirmed_call_hours = $18, version = version + 1
        WHERE id = $1 AND version = $2
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant
        clinic_id,
        expected_version,
        *_settings_values(settings),
    )
    return None if row is None else _clinic(row)
