"""Free appointment start times from working hours, time off and existing bookings.

Pure functions: no database and no clock, so the booking service, the admin API and the course
proposal all answer "is this free?" the same way, and tests can pin every instant.

Wall-clock rules (working hours, the slot grid) are evaluated in the clinic's IANA zone with
`zoneinfo`, so a 10:00 slot stays at 10:00 local on both sides of a daylight-saving change. All
instants handed back are aware UTC datetimes.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from itertools import accumulate, repeat
from typing import Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_STEP = timedelta(minutes=15)

# The inner loop works on integer microseconds since the epoch: exact (unlike float timestamps)
# and much cheaper to compare than aware datetimes.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)

LocalRanges = tuple[tuple[time, time], ...]


def _require_aware(moment: datetime, what: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {moment!r}")


def _to_us(moment: datetime) -> int:
    return (moment - _EPOCH) // _ONE_US


def _from_us(micros: int) -> datetime:
    # fromtimestamp with whole seconds is exact and about twice as fast as epoch + timedelta.
    seconds, rest = divmod(micros, 1_000_000)
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.replace(microsecond=rest) if rest else moment


def _check_local_range(starts: time, ends: time, what: str) -> None:
    if starts.tzinfo is not None or ends.tzinfo is not None:
        raise ValueError(f"{what} must use naive local times, got {starts!r}–{ends!r}")
    if not starts < ends:
        raise ValueError(f"{what} must start before it ends, got {starts}–{ends}")


def _check_no_overlap(ranges: Sequence[tuple[time, time]], what: str) -> None:
    ordered = sorted(ranges)
    for (_, previous_end), (next_start, _) in zip(ordered, ordered[1:], strict=False):
        if next_start < previous_end:
            raise ValueError(f"{what} has overlapping ranges: {ordered}")


@dataclass(frozen=True)
class ClinicRules:
    """The clinic's booking policy; `time_zone` is an IANA name such as "Europe/London"."""

    time_zone: str
    min_notice: timedelta
    horizon: timedelta

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.time_zone!r}") from exc
        if self.min_notice < timedelta(0):
            raise ValueError("min_notice must not be negative")
        if self.horizon <= timedelta(0):
            raise ValueError("horizon must be positive")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)  # ZoneInfo caches instances by key


@dataclass(frozen=True)
class WorkingRange:
    """Weekly working hours; several ranges on one weekday make breaks. ISO weekday, 1 = Monday."""

    weekday: int
    starts: time
    ends: time

    def __post_init__(self) -> None:
        if not 1 <= self.weekday <= 7:
            raise ValueError(f"weekday must be 1 (Monday) to 7 (Sunday), got {self.weekday}")
        _check_local_range(self.starts, self.ends, "a working range")


@dataclass(frozen=True)
class DayOverride:
    """One local date whose hours replace the weekly ones; no ranges means closed all day."""

    day: date
    ranges: LocalRanges = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ranges", tuple(sorted(self.ranges)))
        for starts, ends in self.ranges:
            _check_local_range(starts, ends, f"the override for {self.day}")
        _check_no_overlap(self.ranges, f"the override for {self.day}")

    @property
    def closed(self) -> bool:
        return not self.ranges


@dataclass(frozen=True)
class Interval:
    """A half-open span of absolute time [start, end); touching intervals do not overlap."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        _require_aware(self.start, "start")
        _require_aware(self.end, "end")
        if not self.start < self.end:
            raise ValueError(f"an interval must start before it ends: {self.start}–{self.end}")

    @classmethod
    def trusted(cls, start: datetime, end: datetime) -> Self:
        """Skip the checks for ranges the database already guarantees (aware, non-empty):
        availability loads thousands of them per request."""
        interval = object.__new__(cls)
        object.__setattr__(interval, "start", start)
        object.__setattr__(interval, "end", end)
        return interval


@dataclass(frozen=True)
class TimeOff(Interval):
    """Practitioner unavailable (holiday, training, sickness)."""


@dataclass(frozen=True)
class Busy(Interval):
    """Range occupied by an active appointment or hold, its buffers already included."""


@dataclass(frozen=True)
class BusyTimes:
    """Busy intervals as integer microseconds since the epoch, the shape the loader reads them
    in: `starts` ascending and `ends[i]` the end of the interval starting at `starts[i]`.

    A diary of months holds thousands of them; kept as two tuples of ints from the database
    on, they cost no Python work each (no datetime, no `Busy` object), which is what keeps
    availability fast however long a practitioner's history is. The ranges are trusted
    (non-empty, as the table guarantees)."""

    starts: tuple[int, ...] = ()
    ends: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # asyncpg hands over lists; tuple() of a tuple is the same object, so no copy then.
        object.__setattr__(self, "starts", tuple(self.starts))
        object.__setattr__(self, "ends", tuple(self.ends))
        if len(self.starts) != len(self.ends):
            raise ValueError("busy starts and ends must pair up")

    def __len__(self) -> int:
        return len(self.starts)

    def intervals(self) -> Iterable[Busy]:
        """As `Busy` intervals, for the rare reader that wants them all."""
        for start, end in zip(self.starts, self.ends, strict=True):
            yield Busy.trusted(_from_us(start), _from_us(end))

    def overlapping(self, span: Interval) -> Busy | None:
        """One interval that overlaps `span`, or None; looks only near it (a bisect), not at
        the whole diary."""
        low, high = _to_us(span.start), _to_us(span.end)
        for at in range(bisect_left(self.starts, high) - 1, -1, -1):
            if self.ends[at] > low:
                return Busy.trusted(_from_us(self.starts[at]), _from_us(self.ends[at]))
        return None


NO_BUSY_TIMES = BusyTimes()


@dataclass(frozen=True)
class TreatmentSpec:
    duration: timedelta
    buffer_before: timedelta = timedelta(0)
    buffer_after: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        if self.duration <= timedelta(0):
            raise ValueError("duration must be positive")
        if self.buffer_before < timedelta(0) or self.buffer_after < timedelta(0):
            raise ValueError("buffers must not be negative")

    def occupied(self, start: datetime) -> Busy:
        """What a booking starting at `start` blocks for others, buffers included."""
        return Busy(start - self.buffer_before, start + self.duration + self.buffer_after)


@dataclass(frozen=True)
class PractitionerSchedule:
    """Everything that decides when one practitioner can take a new appointment.

    Busy time comes as `busy` (intervals, as tests and a proposal's own sessions add them)
    and/or `busy_times` (the loaded diary, in microseconds); both count the same."""

    practitioner_id: int
    working: tuple[WorkingRange, ...]
    time_off: tuple[TimeOff, ...] = ()
    overrides: tuple[DayOverride, ...] = ()
    busy: tuple[Busy, ...] = ()
    busy_times: BusyTimes = NO_BUSY_TIMES
    _blocked_us: tuple[list[int], list[int]] | None = field(
        init=False, default=None, repr=False, compare=False
    )
    _weekly: dict[int, LocalRanges] = field(init=False, repr=False, compare=False)
    _by_day: dict[date, LocalRanges] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Callers often pass lists; tuples keep the frozen dataclass honest (and hashable).
        for name in ("working", "time_off", "overrides", "busy"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        weekly: dict[int, list[tuple[time, time]]] = {}
        for rng in self.working:
            weekly.setdefault(rng.weekday, []).append((rng.starts, rng.ends))
        for weekday, ranges in weekly.items():
            _check_no_overlap(ranges, f"weekday {weekday} of practitioner {self.practitioner_id}")
        by_day: dict[date, LocalRanges] = {}
        for override in self.overrides:
            if override.day in by_day:
                raise ValueError(f"two overrides for {override.day}")
            by_day[override.day] = override.ranges
        object.__setattr__(self, "_weekly", {k: tuple(sorted(v)) for k, v in weekly.items()})
        object.__setattr__(self, "_by_day", by_day)

    def blocked_us(self) -> tuple[list[int], list[int]]:
        """Busy and time-off intervals prepared for bisecting, computed once per schedule."""
        if self._blocked_us is None:
            blocked = _blocked(self.busy_times, (*self.busy, *self.time_off))
            object.__setattr__(self, "_blocked_us", blocked)
        assert self._blocked_us is not None
        return self._blocked_us

    def with_busy(self, extra: Sequence[Busy]) -> PractitionerSchedule:
        """This schedule with `extra` busy too (a proposal's own sessions). The blocked lists
        are derived from this schedule's rather than rebuilt: a few inserts, and the running
        maximum redone only where an extra end raises it."""
        if not extra:
            return self
        schedule = replace(self, busy=(*self.busy, *extra))
        starts, max_ends = (list(part) for part in self.blocked_us())
        for interval in extra:
            start, end = _to_us(interval.start), _to_us(interval.end)
            at = bisect_right(starts, start)
            starts.insert(at, start)
            max_ends.insert(at, max(end, max_ends[at - 1]) if at else end)
            # Later maxima are at least this end; they rise until the old ones pass it.
            following = at + 1
            while following < len(max_ends) and max_ends[following] < end:
                max_ends[following] = end
                following += 1
        object.__setattr__(schedule, "_blocked_us", (starts, max_ends))
        return schedule

    def busy_overlapping(self, span: Interval) -> Busy | None:
        """A busy interval (given either way) that overlaps `span`, or None."""
        for busy in self.busy:
            if busy.start < span.end and span.start < busy.end:
                return busy
        return self.busy_times.overlapping(span)

    def ranges_on(self, day: date) -> LocalRanges:
        """Local working ranges on `day`, sorted; an override replaces the weekly hours."""
        if day in self._by_day:
            return self._by_day[day]
        return self._weekly.get(day.isoweekday(), ())


@dataclass(frozen=True, slots=True)
class FreeStart:
    start: datetime  # aware, UTC
    practitioner_id: int


# Up to this many loose intervals are inserted into the loaded (sorted) diary one by one;
# more are sorted in with it.
_INSERT_AT_MOST = 64


def _blocked(loaded: BusyTimes, intervals: Sequence[Interval]) -> tuple[list[int], list[int]]:
    """Starts in order, and the running maximum of ends, of busy and time-off intervals.

    Only intervals starting before some instant `hi` can overlap a span [lo, hi), and one of them
    does iff the largest of their ends is after `lo`: with these two lists that is one bisect,
    instead of a scan of every interval for every slot. The loaded diary is already sorted, so
    it is only copied (and the few loose intervals slotted in); `accumulate` runs in C.
    """
    epoch, unit = _EPOCH, _ONE_US
    loose = [((i.start - epoch) // unit, (i.end - epoch) // unit) for i in intervals]
    if len(loose) > _INSERT_AT_MOST:
        pairs = sorted([*zip(loaded.starts, loaded.ends, strict=True), *loose])
        return [start for start, _ in pairs], list(accumulate((end for _, end in pairs), max))
    starts, ends = list(loaded.starts), list(loaded.ends)
    for start, end in loose:
        at = bisect_right(starts, start)
        starts.insert(at, start)
        ends.insert(at, end)
    return starts, list(accumulate(ends, max))


def local_to_utc(day: date, wall: time, zone: ZoneInfo) -> datetime:
    """The instant of a local wall time; ambiguous times take the first occurrence (fold=0).

    A nonexistent time (inside a spring-forward gap) maps, by PEP 495, to the instant the clock
    would have shown had it not jumped, which is right for range boundaries; slot starts use
    `existing_local_to_utc` instead so that they are skipped.
    """
    return datetime.combine(day, wall, tzinfo=zone).astimezone(UTC)


def existing_local_to_utc(wall: datetime, zone: ZoneInfo) -> datetime | None:
    """Like `local_to_utc` for a naive local datetime, but None if that wall time never occurs."""
    instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) != wall.replace(fold=0):
        return None
    return instant


# Pure and asked again by every request for the same weeks: kept (a few hundred bytes each).
@lru_cache(maxsize=8192)
def _slot_grid(
    day: date, starts: time, ends: time, duration_us: int, step: timedelta, zone: ZoneInfo
) -> Sequence[int]:
    """Starts on the wall-clock grid from `starts` whose whole appointment ends by `ends` (a
    range, or a tuple on a day the clock changes)."""
    range_start = _to_us(local_to_utc(day, starts, zone))
    range_end = _to_us(local_to_utc(day, ends, zone))
    last_start = range_end - duration_us
    if last_start < range_start:
        return ()
    opening_wall = datetime.combine(day, starts)
    closing_wall = datetime.combine(day, ends)
    if (
        range_end - range_start == (closing_wall - opening_wall) // _ONE_US
        and existing_local_to_utc(opening_wall, zone) is not None
        and existing_local_to_utc(closing_wall, zone) is not None
    ):
        # The clock does not jump inside the range (the everyday case): the wall-clock grid is a
        # plain arithmetic progression in UTC, with no per-slot zone conversion.
        return range(range_start, last_start + 1, step // _ONE_US)
    grid: list[int] = []
    wall = opening_wall
    while wall < closing_wall:
        instant = existing_local_to_utc(wall, zone)
        if instant is not None and range_start <= _to_us(instant) <= last_start:
            grid.append(_to_us(instant))
        wall += step
    return tuple(grid)


def _days(first_day: date, last_day: date) -> Iterable[date]:
    for offset in range((last_day - first_day).days + 1):
        yield first_day + timedelta(days=offset)


def free_starts(
    treatment: TreatmentSpec,
    schedules: Sequence[PractitionerSchedule],
    rules: ClinicRules,
    *,
    first_day: date,
    last_day: date,
    now: datetime,
    step: timedelta = DEFAULT_STEP,
) -> list[FreeStart]:
    """Every free start for `treatment` on local dates first_day..last_day (inclusive).

    Pass one schedule for a given practitioner, several for "any practitioner". A start is free
    when the appointment lies inside one working range of its local day, on that range's slot
    grid, no earlier than now + min_notice and no later than now + horizon, and the appointment
    with its buffers overlaps no busy interval and no time off. Buffers may reach outside working
    hours (set-up before opening is the clinic's call), but never into another booking.

    Sorted by start; at equal starts, in the order of `schedules`.
    """
    _require_aware(now, "now")
    if step <= timedelta(0):
        raise ValueError("step must be positive")
    zone = rules.zone
    earliest = now + rules.min_notice
    latest = now + rules.horizon
    earliest_us, latest_us = _to_us(earliest), _to_us(latest)
    # Days wholly outside notice/horizon cannot hold a slot; skipping them keeps wide queries cheap.
    first_day = max(first_day, earliest.astimezone(zone).date())
    last_day = min(last_day, latest.astimezone(zone).date())

    duration_us = treatment.duration // _ONE_US
    before_us = treatment.buffer_before // _ONE_US
    reach_after = duration_us + treatment.buffer_after // _ONE_US
    grids: dict[tuple[date, time, time], Sequence[int]] = {}  # practitioners share hours
    found: list[tuple[int, int, int]] = []

    for order, schedule in enumerate(schedules):
        blocked = schedule.blocked_us()
        practitioner = schedule.practitioner_id
        for day in _days(first_day, last_day):
            for starts, ends in schedule.ranges_on(day):
                key = (day, starts, ends)
                if key not in grids:
                    grids[key] = _slot_grid(day, starts, ends, duration_us, step, zone)
                grid = grids[key]
                if isinstance(grid, range):
                    runs = _free_runs(grid, earliest_us, latest_us, blocked, before_us, reach_after)
                    for run in runs:
                        found.extend(zip(run, repeat(order), repeat(practitioner)))
                    continue
                block_starts, block_max_ends = blocked
                for start in grid:
                    if start < earliest_us or start > latest_us:
                        continue
                    # Does [start - buffer_before, end + buffer_after) meet a blocked interval?
                    count = bisect_left(block_starts, start + reach_after)
                    if count and block_max_ends[count - 1] > start - before_us:
                        continue
                    found.append((start, order, practitioner))
    found.sort()
    instants: dict[int, datetime] = {}  # with "any" practitioner several slots share a start
    free = []
    for start, _, practitioner in found:
        instant = instants.get(start)
        if instant is None:
            instant = instants[start] = _from_us(start)
        free.append(FreeStart(instant, practitioner))
    return free


def _free_runs(
    grid: range,
    earliest_us: int,
    latest_us: int,
    blocked: tuple[list[int], list[int]],
    before_us: int,
    reach_after: int,
) -> list[range]:
    """The free starts of an evenly spaced grid within [earliest_us, latest_us], as runs.

    The same test as the slot-by-slot loop (a start s is taken iff some blocked interval
    begins before s + reach_after and the largest end among those is after s - before_us), but
    walked from interval to interval: a taken start jumps straight past the end that blocks it,
    and a free one extends to the last start before the next interval begins. So the work
    follows the number of bookings in the range, not of slots, and the free runs are ranges.
    """
    step = grid.step
    if not grid:
        return []
    first, last = grid.start, grid[-1]
    if earliest_us > first:
        first += -(-(earliest_us - first) // step) * step
    last = min(last, latest_us)
    if last < first:
        return []
    last = first + (last - first) // step * step
    block_starts, block_max_ends = blocked
    count_all = len(block_starts)
    runs = []
    start = first
    while start <= last:
        count = bisect_left(block_starts, start + reach_after)
        if count and block_max_ends[count - 1] > start - before_us:
            # Taken until the blocking end (and the buffer before) is past: the next grid start.
            clear = block_max_ends[count - 1] + before_us
            start += -(-(clear - start) // step) * step
            continue
        limit = last if count == count_all else min(last, block_starts[count] - reach_after)
        run = range(start, limit + 1, step)
        runs.append(run)
        start = run[-1] + step
    return runs


def why_not_free(
    treatment: TreatmentSpec,
    schedule: PractitionerSchedule,
    rules: ClinicRules,
    start: datetime,
    *,
    now: datetime,
    step: timedelta = DEFAULT_STEP,
) -> str | None:
    """None if `start` is a free start with this practitioner, else a sentence saying why not.

    The verdict comes from `free_starts` itself, so the two can never disagree; the diagnosis
    only picks the words.
    """
    _require_aware(start, "start")
    zone = rules.zone
    day = start.astimezone(zone).date()
    free = free_starts(
        treatment, [schedule], rules, first_day=day, last_day=day, now=now, step=step
    )
    if any(slot.start == start for slot in free):
        return None
    return _diagnose(treatment, schedule, rules, start, now=now, step=step)


def format_local(moment: datetime, zone: ZoneInfo) -> str:
    return f"{moment.astimezone(zone):%Y-%m-%d %H:%M}"


def format_duration(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    if minutes % (24 * 60) == 0 and minutes:
        return f"{minutes // (24 * 60)} days"
    if minutes % 60 == 0 and minutes:
        return f"{minutes // 60} h"
    return f"{minutes} min"


def _diagnose(
    treatment: TreatmentSpec,
    schedule: PractitionerSchedule,
    rules: ClinicRules,
    start: datetime,
    *,
    now: datetime,
    step: timedelta,
) -> str:
    zone = rules.zone
    who = f"practitioner {schedule.practitioner_id}"
    local = start.astimezone(zone)
    if start < now + rules.min_notice:
        return f"less than the minimum notice of {format_duration(rules.min_notice)} ahead"
    if start > now + rules.horizon:
        return f"beyond the booking horizon of {format_duration(rules.horizon)}"
    ranges = schedule.ranges_on(local.date())
    if not ranges:
        return f"{who} does not work on {local.date()}"
    hours = ", ".join(f"{a:%H:%M}–{b:%H:%M}" for a, b in ranges)
    end = start + treatment.duration
    containing = [
        (starts, ends)
        for starts, ends in ranges
        if local_to_utc(local.date(), starts, zone) <= start
        and end <= local_to_utc(local.date(), ends, zone)
    ]
    if not containing:
        return f"outside {who}'s working hours on {local.date()} ({hours})"
    range_start = datetime.combine(local.date(), containing[0][0])
    if (local.replace(tzinfo=None) - range_start) % step:
        return f"not on the {format_duration(step)} slot grid starting at {containing[0][0]:%H:%M}"
    occupied = treatment.occupied(start)
    for off in schedule.time_off:
        if off.start < occupied.end and occupied.start < off.end:
            return (
                f"{who} has time off from {format_local(off.start, zone)} "
                f"to {format_local(off.end, zone)}"
            )
    busy = schedule.busy_overlapping(occupied)
    if busy is not None:
        return (
            f"overlaps another booking or hold from {format_local(busy.start, zone)} "
            f"to {format_local(busy.end, zone)}"
        )
    return f"{local:%H:%M} on {local.date()} is not a bookable local time (daylight-saving change)"
