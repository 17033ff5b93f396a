"""The day-by-day picker of free times the self-service pages share: moving a session
(self_move) and booking a course's next session (self_next, and the first free times on the
overview, self_overview). Templates: self/_picker.html."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from aiohttp import web

from services.booking.domain.offers import Offer, free_slots
from services.booking.web.self_visit import Slot, Visit, field_day
from shared.scheduling.availability import FreeStart
from shared.scheduling.loader import TreatmentInfo
from shared.web import POOL


class Names(Protocol):
    """Practitioners' display names (self_overview.Names, which imports this module)."""

    def practitioner(self, practitioner_id: int) -> str: ...


PICKER_DAYS = 14  # days of free times offered at once


@dataclass(frozen=True)
class Choice:
    slot: Slot
    starts: datetime  # clinic time
    practitioner: str


@dataclass(frozen=True)
class PickerQuery:
    """Where the picker is: whose diary ('same' or 'any'), the first day shown, the chosen day."""

    who: str
    first: date | None
    day: date | None

    @classmethod
    def read(cls, values: Mapping[str, Any]) -> PickerQuery:
        who = values.get("who")
        return cls(
            who if who in ("same", "any") else "same",
            field_day(values.get("from")),
            field_day(values.get("day")),
        )


def choices_by_day(
    visit: Visit, slots: Sequence[FreeStart], names: Names, prefer: int
) -> dict[date, list[Choice]]:
    """Free starts by local day, one per time: the session's own practitioner when free."""
    best: dict[datetime, FreeStart] = {}
    for slot in slots:
        kept = best.get(slot.start)
        if kept is None or (slot.practitioner_id == prefer and kept.practitioner_id != prefer):
            best[slot.start] = slot
    days: dict[date, list[Choice]] = {}
    for start in sorted(best):
        slot = best[start]
        local = visit.local(start)
        days.setdefault(local.date(), []).append(
            Choice(
                Slot(start, slot.practitioner_id),
                local,
                names.practitioner(slot.practitioner_id),
            )
        )
    return days


def choices_of(visit: Visit, slots: Sequence[FreeStart], names: Names) -> list[Choice]:
    return [
        Choice(
            Slot(s.start, s.practitioner_id),
            visit.local(s.start),
            names.practitioner(s.practitioner_id),
        )
        for s in slots
    ]


async def free_choices(
    request: web.Request,
    visit: Visit,
    treatment: TreatmentInfo,
    names: Names,
    who: str,
    prefer: int,
    first: date,
    last: date,
) -> dict[date, list[Choice]]:
    """Free times on local days first..last by day: with `prefer` only ('same'), or with anyone
    ('any'), `prefer` chosen where several are free at the same time."""
    offer = Offer(visit.clinic, treatment)
    only = prefer if who == "same" else None
    slots = await free_slots(request.app[POOL], offer, only, first, last, visit.now)
    return choices_by_day(visit, slots, names, prefer)


def pick_day(days: Mapping[date, Sequence[Choice]], *wanted: date | None) -> date | None:
    """The day the picker opens on: the first of `wanted` that has free times, else the first
    day that has any."""
    return next((d for d in wanted if d in days), next(iter(days), None))
