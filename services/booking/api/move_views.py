"""How the API shows a move's gaps, shifts of later sessions and alternative times: in
reschedule answers, and in the refusals of a move (services/booking/api/errors)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from shared.scheduling.availability import FreeStart
from shared.scheduling.gaps import Gap, Shift

GapProblem = Literal["below_minimum", "past_soft_maximum", "needs_clinician_review"]


class GapOut(BaseModel):
    earlier_appointment_id: int
    later_appointment_id: int
    earlier_position: int | None
    later_position: int | None
    days: int = Field(description="local calendar days between the two starts")
    min_days: int | None
    target_days: int | None
    max_days: int | None
    problems: list[GapProblem]
    messages: list[str]


class ShiftOut(BaseModel):
    appointment_id: int
    position: int | None
    from_starts_at: datetime
    from_practitioner_id: int
    to_starts_at: datetime
    to_starts_local: datetime
    to_practitioner_id: int
    gap_days: int
    reason: str


class Alternative(BaseModel):
    starts_at: datetime
    starts_local: datetime
    practitioner_id: int


def gap_out(gap: Gap) -> GapOut:
    rule = gap.rule
    return GapOut(
        earlier_appointment_id=gap.earlier_id,
        later_appointment_id=gap.later_id,
        earlier_position=gap.earlier_position,
        later_position=gap.later_position,
        days=gap.days,
        min_days=rule.min_days if rule else None,
        target_days=rule.target_days if rule else None,
        max_days=rule.max_days if rule else None,
        problems=list(gap.problems),  # type: ignore[arg-type]
        messages=list(gap.messages),
    )


def shift_out(shift: Shift, zone: ZoneInfo) -> ShiftOut:
    return ShiftOut(
        appointment_id=shift.appointment_id,
        position=shift.position,
        from_starts_at=shift.from_start.astimezone(UTC),
        from_practitioner_id=shift.from_practitioner_id,
        to_starts_at=shift.to_start.astimezone(UTC),
        to_starts_local=shift.to_start.astimezone(zone),
        to_practitioner_id=shift.to_practitioner_id,
        gap_days=shift.gap_days,
        reason=shift.reason,
    )


def alternative_out(slot: FreeStart, zone: ZoneInfo) -> Alternative:
    return Alternative(
        starts_at=slot.start,
        starts_local=slot.start.astimezone(zone),
        practitioner_id=slot.practitioner_id,
    )
