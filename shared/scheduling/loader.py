"""Load what the pure availability engine needs, through the stores that own the rows: the
clinic's rules, a treatment's spec and gaps, and each practitioner's hours, time off, overrides
and busy time over a date range. One round of queries per request, whatever the number of
practitioners.

`ClinicInfo` and `TreatmentInfo` are the engine's views of the stores' `Clinic` and `Treatment`
rows, built in one place each (`clinic_info`, `treatment_info`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from shared.scheduling.availability import (
    BusyTimes,
    ClinicRules,
    DayOverride,
    PractitionerSchedule,
    TimeOff,
    TreatmentSpec,
    WorkingRange,
)
from shared.scheduling.course import GapRule
from shared.store import clinics, diaries, treatments, working_hours

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


class WeeklyHoursCache:
    """Each practitioner's weekly hours as last read, filed under the week's `hours_key`.

    The key comes from the database with every availability read (in the statement that would
    otherwise read the hours), and every change of a practitioner's hours gives them a new key
    (a trigger, whoever writes): so a changed week is read afresh by the next request in every
    process, and an unchanged one is never read again. One per process (`WEEKS`); tests make
    their own to stand for other processes. Keys are random, so several databases can share
    one cache without mixing their practitioners up."""

    def __init__(self, max_weeks: int = 20_000) -> None:
        self._weeks: dict[str, tuple[WorkingRange, ...]] = {}
        # The keys last seen per clinic: the ones worth telling the database we hold.
        self._clinic_keys: dict[int, frozenset[str]] = {}
        self._max_weeks = max_weeks

    def known(self, clinic_id: int) -> frozenset[str]:
        return self._clinic_keys.get(clinic_id, frozenset())

    def get(self, key: str) -> tuple[WorkingRange, ...] | None:
        return self._weeks.get(key)

    def remember(self, clinic_id: int, weeks: dict[str, tuple[WorkingRange, ...]]) -> None:
        if len(self._weeks) + len(weeks) > self._max_weeks:
            self._weeks.clear()  # old keys are never asked for again; start over rather than grow
            self._clinic_keys.clear()
        self._weeks.update(weeks)
        known = self._clinic_keys.get(clinic_id, frozenset())
        self._clinic_keys[clinic_id] = known | weeks.keys()


WEEKS = WeeklyHoursCache()


async def _week(
    db: Executor, cache: WeeklyHoursCache, diary: diaries.Diary
) -> tuple[tuple[WorkingRange, ...], bool]:
    """The diary's week and whether it was read now (rather than found in the cache)."""
    if diary.hours is None:
        week = cache.get(diary.hours_key)
        if week is not None:
            return week, False
        # We said we held this key, but the cache was cleared since: read the week alone.
        rows = await working_hours.for_practitioner(db, diary.practitioner_id)
        return tuple(WorkingRange(h.weekday, h.starts, h.ends) for h in rows), True
    return tuple(WorkingRange(d, a, b) for d, a, b in diary.hours), True


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
    cache: WeeklyHoursCache = WEEKS,
) -> list[PractitionerSchedule]:
    """Schedules of the clinic's active practitioners (or only `practitioner_ids`), in id order.

    One statement (shared/store/diaries.py) reads only the window of days: time off, overrides
    and busy time, the latter as two arrays of microseconds per practitioner. The weekly hours
    come from `cache` unless they changed."""
    start, end = utc_window(first_day, last_day, zone)
    held = {key for key in cache.known(clinic_id) if cache.get(key) is not None}
    found = await diaries.for_window(
        db,
        clinic_id,
        practitioner_ids,
        known_keys=held,
        start=start,
        end=end,
        first_day=first_day,
        last_day=last_day,
        now=now,
        exclude_ids=exclude_appointment_ids,
    )
    fresh: dict[str, tuple[WorkingRange, ...]] = {}
    schedules = []
    for diary in found:
        week, read_now = await _week(db, cache, diary)
        if read_now:
            fresh[diary.hours_key] = week
        schedules.append(
            PractitionerSchedule(
                practitioner_id=diary.practitioner_id,
                working=week,
                time_off=tuple(TimeOff.trusted(a, b) for a, b in diary.time_off),
                overrides=tuple(DayOverride(day, tuple(ranges)) for day, ranges in diary.overrides),
                busy_times=BusyTimes(tuple(diary.busy_starts), tuple(diary.busy_ends)),
            )
        )
    if fresh:
        cache.remember(clinic_id, fresh)
    return schedules
