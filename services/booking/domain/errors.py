"""The booking domain's own refusals, on top of the shared kinds (shared/domain/errors.py).

A conflict over times describes itself with the next free alternatives; those need the
database, so `explain` looks them up once the transaction has rolled back (the transaction
helper and the idempotent runner call it), and the faces only format what it found.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from services.booking.domain.offers import (
    Offer,
    SessionConflict,
    alternatives,
    conflict_json,
    iso,
    slots_json,
)
from shared.domain.errors import Conflict, Executor, NotFound
from shared.scheduling.availability import FreeStart, format_local
from shared.scheduling.course import CourseProposal
from shared.scheduling.gaps import MoveCheck, ShiftPlan
from shared.scheduling.loader import load_clinic, load_treatment
from shared.store import appointments
from shared.store.holds import Hold

HoldState = Literal["active", "expired", "released", "booked"]


class SlotsTaken(Conflict):
    """One or more sessions are not free (any more); explained with the next free times."""

    code = "slot-unavailable"

    def __init__(self, offer: Offer, conflicts: Sequence[SessionConflict], now: datetime) -> None:
        self.offer = offer
        self.conflicts = list(conflicts)
        self.now = now
        self.alternatives: list[FreeStart] = []
        super().__init__(self.describe())

    def describe(self) -> str:
        zone = self.offer.clinic.zone
        return "; ".join(
            f"session {c.position} at {format_local(c.start, zone)}: {c.reason}"
            for c in self.conflicts
        )

    async def explain(self, db: Executor) -> None:
        first = self.conflicts[0]
        self.alternatives = await alternatives(
            db, self.offer, first.practitioner_id, first.start, self.now
        )
        self.details = {
            "conflicts": [conflict_json(c, self.offer) for c in self.conflicts],
            "alternatives_for_position": first.position,
            "alternatives": slots_json(self.alternatives, self.offer),
            "time_zone": self.offer.clinic.time_zone,
        }


class HoldLapsed(SlotsTaken):
    """The hold expired and its times were taken meanwhile."""

    code = "hold-expired"

    def describe(self) -> str:
        return "the hold has expired and its time is no longer free: " + super().describe()


class CourseNotPlaceable(Conflict):
    """The course cannot be placed from this first start: names the position that failed and
    offers other first starts (moving the first session is what can re-place a whole course)."""

    code = "course-not-placeable"

    def __init__(
        self,
        offer: Offer,
        proposal: CourseProposal,
        practitioner_id: int,
        first_start: datetime,
        now: datetime,
    ) -> None:
        super().__init__(proposal.failure or "course cannot be placed")
        self.offer = offer
        self.proposal = proposal
        self.practitioner_id = practitioner_id
        self.first_start = first_start
        self.now = now
        self.alternatives: list[FreeStart] = []

    async def explain(self, db: Executor) -> None:
        self.alternatives = await alternatives(
            db, self.offer, self.practitioner_id, self.first_start, self.now
        )
        self.details = {
            "failed_position": self.proposal.failed_position,
            "placed": [
                {
                    "position": s.position,
                    "practitioner_id": s.practitioner_id,
                    "start": iso(s.start),
                }
                for s in self.proposal.sessions
            ],
            "alternatives_for_position": 1,
            "alternatives": slots_json(self.alternatives, self.offer),
            "time_zone": self.offer.clinic.time_zone,
        }


class HoldNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("hold", "token", "no hold with this token (check it was copied whole)")


class HoldFinished(Conflict):
    """A released or already booked hold cannot be booked (again); a released one is explained
    with the next free times."""

    def __init__(self, hold: Hold, state: HoldState, offer: Offer | None, now: datetime) -> None:
        if state == "booked":
            message, code = "this hold has already been booked", "hold-booked"
        elif offer is None:
            message, code = "this treatment is no longer offered", "not-offered"
        else:
            message, code = "this hold was released; choose a time again", "hold-released"
        super().__init__(message, code=code)
        self.hold = hold
        self.state = state
        self.offer = offer
        self.now = now

    async def explain(self, db: Executor) -> None:
        if self.code != "hold-released" or self.offer is None:
            return
        rows = await appointments.for_hold(db, self.hold.id)
        found: list[FreeStart] = []
        if rows:
            found = await alternatives(
                db, self.offer, rows[0].practitioner_id, rows[0].starts_at, self.now
            )
        self.details = {"alternatives": slots_json(found, self.offer)}


class NotActive(Conflict):
    """The appointment's (or course's) status does not allow this change at all."""

    code = "illegal-transition"

    def __init__(self, current: str, message: str) -> None:
        super().__init__(message, current_status=current)
        self.current = current


class SlotUnavailable(Conflict):
    """The time a session is moved to is not free (or was taken a moment ago); explained with
    the next free times for that session, which does not block itself."""

    code = "slot-unavailable"

    def __init__(
        self,
        message: str,
        *,
        appointment_id: int,
        practitioner_id: int | None,
        start: datetime,
        now: datetime,
    ) -> None:
        super().__init__(message)
        self.appointment_id = appointment_id
        self.practitioner_id = practitioner_id
        self.start = start
        self.now = now
        self.alternatives: list[FreeStart] = []
        self.zone: ZoneInfo = ZoneInfo("UTC")

    async def explain(self, db: Executor) -> None:
        moving = await appointments.get(db, self.appointment_id)
        if moving is None:
            return
        clinic = await load_clinic(db, moving.clinic_id)
        treatment = await load_treatment(db, moving.treatment_id)
        if clinic is None or treatment is None:
            return
        self.zone = clinic.zone
        self.alternatives = await alternatives(
            db,
            Offer(clinic, treatment),
            self.practitioner_id or moving.practitioner_id,
            self.start,
            self.now,
            exclude_appointment_ids=[self.appointment_id],
        )


class GapRefused(Conflict):
    """A move below the hard minimum gap, without an override: the gaps around the new time,
    and the shifts of later sessions that would repair the gap after it."""

    code = "gap-below-minimum"

    def __init__(self, message: str, check: MoveCheck, plan: ShiftPlan, zone: ZoneInfo) -> None:
        super().__init__(message)
        self.check = check
        self.plan = plan
        self.zone = zone
