"""Load what the pure availability engine needs, through the stores that own the rows: the
clinic's rules, a treatment's spec and gaps, and each practitioner's hours, time off, overrides
and busy time over a date range. One round of queries per request, whatever the number of
practitioners.

`ClinicInfo` and `TreatmentInfo` are the engine's views of the stores' `Clinic` and `Treatment`
rows, built in one place each (`clinic_info`, `treatment_info`)."""

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
from shared.store import (
    appointments,
    clinics,
    practitioners,
    schedule_overrides,
    time_off,
    treatments,
    working_hours,
)

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
    return {id_: clinic_info(row) for id_, row in (await clinics.get_many(db, clinic_ids)).items()}


def clinic_info(row: clinics.Clinic) -> ClinicInfo:
    """The engine's view of a clinic row (the one place it is built)."""
    return ClinicInfo(
        id=row.id,
        name=row.name,
        time_zone=row.time_zone,
        phone=row.phone,
        address=row.address,
        region=row.region,
        brand_colour=row.brand_colour,
        rules=ClinicRules(
            time_zone=row.time_zone,
            min_notice=timedelta(minutes=row.min_notice_minutes),
            horizon=timedelta(days=row.horizon_days),
        ),
        cancellation_notice=timedelta(hours=row.cancellation_notice_hours),
        hold_time=timedelta(minutes=row.hold_minutes),
        no_show_grace=timedelta(minutes=row.no_show_grace_minutes),
        slot_step=timedelta(minutes=row.slot_step_minutes),
        quiet_start=row.quiet_start,
        quiet_end=row.quiet_end,
        sms_countries=clinics.sms_countries_of(row.sms_countries, row.region),
    )


async def load_treatment(db: Executor, treatment_id: int) -> TreatmentInfo | None:
    row = await treatments.get(db, treatment_id)
    return None if row is None else treatment_info(row)


def treatment_info(row: treatments.Treatment) -> TreatmentInfo:
    """The engine's view of a treatment row and its gaps (the one place it is built)."""
    return TreatmentInfo(
        id=row.id,
        clinic_id=row.clinic_id,
        code=row.code,
        name=row.name,
        description=row.description,
        spec=TreatmentSpec(
            duration=timedelta(minutes=row.duration_minutes),
            buffer_before=timedelta(minutes=row.buffer_before_minutes),
            buffer_after=timedelta(minutes=row.buffer_after_minutes),
        ),
        needs_consultation=row.needs_consultation,
        sessions_min=row.sessions_min,
        sessions_max=row.sessions_max,
        gaps={g.position: GapRule(g.target_days, g.min_days, g.max_days) for g in row.gaps},
        maintenance_interval_days=row.maintenance_interval_days,
        public=row.public,
        active=row.active,
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
    ids = await practitioners.active_ids(db, clinic_id, practitioner_ids)
    if not ids:
        return []
    window = utc_window(first_day, last_day, zone)
    # Independent reads: from a pool they run side by side, one round trip instead of four.
    hours, absences, overrides, busy = (
        await asyncio.gather(
            working_hours.for_practitioners(db, ids),
            time_off.overlapping(db, ids, *window),
            schedule_overrides.for_practitioners(db, ids, first_day, last_day),
            appointments.busy_by_practitioner(
                db, ids, *window, now=now, exclude_ids=list(exclude_appointment_ids)
            ),
        )
        if isinstance(db, asyncpg.Pool)
        else (
            await working_hours.for_practitioners(db, ids),
            await time_off.overlapping(db, ids, *window),
            await schedule_overrides.for_practitioners(db, ids, first_day, last_day),
            await appointments.busy_by_practitioner(
                db, ids, *window, now=now, exclude_ids=list(exclude_appointment_ids)
            ),
        )
    )
    working: dict[int, list[WorkingRange]] = defaultdict(list)
    for h in hours:
        working[h.practitioner_id].append(WorkingRange(h.weekday, h.starts, h.ends))
    off: dict[int, list[TimeOff]] = defaultdict(list)
    for absence in absences:
        off[absence.practitioner_id].append(TimeOff.trusted(absence.starts_at, absence.ends_at))
    days: dict[int, list[DayOverride]] = defaultdict(list)
    for override in overrides:
        days[override.practitioner_id].append(DayOverride(override.day, tuple(override.ranges)))
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
