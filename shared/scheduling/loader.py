"""Load what the pure availability engine needs from PostgreSQL: the clinic's rules, a
treatment's spec and gaps, and each practitioner's hours, time off, overrides and busy time over
a date range. One round of queries per request, whatever the number of practitioners."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from shared.scheduling.availability import (
    Busy,
    ClinicRules,
    DayOverride,
    PractitionerSchedule,
    TimeOff,
    TreatmentSpec,
    WorkingRange,
)
from shared.scheduling.course import GapRule
from shared.store import appointments, clinics, schedules

Executor = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True)
class ClinicInfo:
    id: int
    name: str
    time_zone: str
    phone: str
    address: str
    region: str
    brand_colour: str
    rules: ClinicRules
    cancellation_notice: timedelta
    hold_time: timedelta
    no_show_grace: timedelta
    slot_step: timedelta
    # The window in which scheduled messages may go out, in the recipient's local time.
    quiet_start: time = time(8)
    quiet_end: time = time(20)
    # The countries whose mobiles the clinic sends SMS to (empty: only its own region).
    sms_countries: tuple[str, ...] = ()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    @property
    def texts_to(self) -> tuple[str, ...]:
        """The countries a mobile typed for this clinic may be from."""
        return clinics.sms_countries_of(self.sms_countries, self.region)


@dataclass(frozen=True)
class TreatmentInfo:
    id: int
    clinic_id: int
    code: str
    name: str
    description: str
    spec: TreatmentSpec
    needs_consultation: bool
    sessions_min: int
    sessions_max: int
    gaps: dict[int, GapRule]
    maintenance_interval_days: int | None
    public: bool
    active: bool

    @property
    def is_course(self) -> bool:
        return self.sessions_max > 1


async def load_clinic(db: Executor, clinic_id: int) -> ClinicInfo | None:
    return (await load_clinics(db, [clinic_id])).get(clinic_id)


async def load_clinics(db: Executor, clinic_ids: Sequence[int]) -> dict[int, ClinicInfo]:
    """id → clinic for those of `clinic_ids` that exist, in one query."""
    rows = await db.fetch(
        """
        SELECT id, name, time_zone, phone, address, region, brand_colour, min_notice_minutes,
               horizon_days, cancellation_notice_hours, hold_minutes, no_show_grace_minutes,
               slot_step_minutes, quiet_start, quiet_end, sms_countries
        FROM clinic WHERE id = ANY($1::bigint[])
        """,
        list(set(clinic_ids)),
    )
    return {row["id"]: _clinic_info(row) for row in rows}


def _clinic_info(row: asyncpg.Record) -> ClinicInfo:
    return ClinicInfo(
        id=row["id"],
        name=row["name"],
        time_zone=row["time_zone"],
        phone=row["phone"],
        address=row["address"],
        region=row["region"],
        brand_colour=row["brand_colour"],
        rules=ClinicRules(
            time_zone=row["time_zone"],
            min_notice=timedelta(minutes=row["min_notice_minutes"]),
            horizon=timedelta(days=row["horizon_days"]),
        ),
        cancellation_notice=timedelta(hours=row["cancellation_notice_hours"]),
        hold_time=timedelta(minutes=row["hold_minutes"]),
        no_show_grace=timedelta(minutes=row["no_show_grace_minutes"]),
        slot_step=timedelta(minutes=row["slot_step_minutes"]),
        quiet_start=row["quiet_start"],
        quiet_end=row["quiet_end"],
        sms_countries=clinics.sms_countries_of(row["sms_countries"], row["region"]),
    )


async def load_treatment(db: Executor, treatment_id: int) -> TreatmentInfo | None:
    row = await db.fetchrow(
        """
        SELECT t.id, t.clinic_id, t.code, t.name, t.description, t.duration_minutes,
               t.buffer_before_minutes, t.buffer_after_minutes, t.needs_consultation,
               t.sessions_min, t.sessions_max, t.maintenance_interval_days, t.public, t.active,
               coalesce(
                   (SELECT jsonb_agg(jsonb_build_array(g.position, g.target_days, g.min_days,
                                                       g.max_days) ORDER BY g.position)
                    FROM treatment_gap g WHERE g.treatment_id = t.id),
                   '[]'::jsonb) AS gaps
        FROM treatment t WHERE t.id = $1
        """,
        treatment_id,
    )
    if row is None:
        return None
    return TreatmentInfo(
        id=row["id"],
        clinic_id=row["clinic_id"],
        code=row["code"],
        name=row["name"],
        description=row["description"],
        spec=TreatmentSpec(
            duration=timedelta(minutes=row["duration_minutes"]),
            buffer_before=timedelta(minutes=row["buffer_before_minutes"]),
            buffer_after=timedelta(minutes=row["buffer_after_minutes"]),
        ),
        needs_consultation=row["needs_consultation"],
        sessions_min=row["sessions_min"],
        sessions_max=row["sessions_max"],
        gaps={pos: GapRule(target, low, high) for pos, target, low, high in row["gaps"]},
        maintenance_interval_days=row["maintenance_interval_days"],
        public=row["public"],
        active=row["active"],
    )


def utc_window(first_day: date, last_day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """Absolute bounds wide enough for every local instant of the days, buffers included."""
    start = datetime.combine(first_day - timedelta(days=1), time(0), zone)
    end = datetime.combine(last_day + timedelta(days=2), time(0), zone)
    return start, end


async def load_schedules(
    db: Executor,
    clinic_id: int,
    *,
    practitioner_ids: Sequence[int] | None,
    first_day: date,
    last_day: date,
    zone: ZoneInfo,
    now: datetime,
    exclude_appointment_ids: Sequence[int] = (),
) -> list[PractitionerSchedule]:
    """Schedules of the clinic's active practitioners (or only `practitioner_ids`), in id order."""
    ids = await clinics.active_practitioner_ids(db, clinic_id, practitioner_ids)
    if not ids:
        return []
    window = utc_window(first_day, last_day, zone)
    # Independent reads: from a pool they run side by side, one round trip instead of four.
    hours, time_off, overrides, busy = (
        await asyncio.gather(
            schedules.working_hours_for(db, ids),
            schedules.time_off_for(db, ids, *window),
            schedules.overrides_for(db, ids, first_day, last_day),
            appointments.busy_by_practitioner(
                db, ids, *window, now=now, exclude_ids=list(exclude_appointment_ids)
            ),
        )
        if isinstance(db, asyncpg.Pool)
        else (
            await schedules.working_hours_for(db, ids),
            await schedules.time_off_for(db, ids, *window),
            await schedules.overrides_for(db, ids, first_day, last_day),
            await appointments.busy_by_practitioner(
                db, ids, *window, now=now, exclude_ids=list(exclude_appointment_ids)
            ),
        )
    )
    working: dict[int, list[WorkingRange]] = defaultdict(list)
    for practitioner_id, weekday, starts, ends in hours:
        working[practitioner_id].append(WorkingRange(weekday, starts, ends))
    off: dict[int, list[TimeOff]] = defaultdict(list)
    for practitioner_id, starts_at, ends_at in time_off:
        off[practitioner_id].append(TimeOff.trusted(starts_at, ends_at))
    days: dict[int, list[DayOverride]] = defaultdict(list)
    for practitioner_id, day, ranges in overrides:
        days[practitioner_id].append(
            DayOverride(
                day, tuple((time.fromisoformat(a), time.fromisoformat(b)) for a, b in ranges)
            )
        )
    return [
        PractitionerSchedule(
            practitioner_id=pid,
            working=tuple(working[pid]),
            time_off=tuple(off[pid]),
            overrides=tuple(days[pid]),
            busy=tuple(Busy.trusted(a, b) for a, b in busy.get(pid, [])),
        )
        for pid in ids
    ]
