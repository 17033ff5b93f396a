"""A course's next session booked by the patient from their private page: which courses wait
for one (`waiting`), and booking it (`book_next_session`) with the checks staff get when they
book it (bookings.book_for_patient: numbered after the last session that counts, free, a held
proposal withdrawn first, confirmation and reminders planned, audited), except that the patient
stays inside the gap window: never below the hard minimum, never past the soft maximum. The
calls on the staff list about the missing session (overdue, an unanswered or declined proposal)
are closed, since the patient booked it.

A course waits for its next session when it is active, nothing of it is held, booked, confirmed
or checked in, its last completed session is not the last planned one, and the clinic has a gap
rule for the next position (the same test as the scheduler's proposals and gap checks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from services.booking.domain.bookings import BookingResult, StaffBooking, book_for_patient
from services.booking.domain.offers import Offer
from services.booking.domain.sessions import SessionRequest
from shared.domain.appointment_states import ACTIVE
from shared.domain.errors import Conflict, InvalidField
from shared.scheduling.course import GapRule
from shared.scheduling.loader import TreatmentInfo
from shared.store import appointments, call_tasks, series
from shared.store.appointments import Appointment
from shared.store.audit import Actor
from shared.store.series import Series

SOURCE = "self_service"


@dataclass(frozen=True)
class NextSession:
    """The session a course waits for, and the local days it may be booked on."""

    series_id: int
    position: int
    planned: int
    after: Appointment  # the last completed session
    rule: GapRule
    first_day: date  # hard minimum after the last completed session
    last_day: date  # soft maximum

    def needs_review(self, day: date) -> bool:
        """Booked on `day`, the session is more than twice the target gap after the last one:
        a clinician reviews it before the visit (as a staff booking is flagged)."""
        return (day - self.after_day).days > 2 * self.rule.target_days

    @property
    def after_day(self) -> date:
        return self.first_day - timedelta(days=self.rule.min_days)

    def review_from(self) -> date | None:
        """The first day of the window that would need clinician review, if any."""
        first = self.after_day + timedelta(days=2 * self.rule.target_days + 1)
        return max(first, self.first_day) if first <= self.last_day else None


def waiting(
    course: Series, rows: Sequence[Appointment], treatment: TreatmentInfo, zone: ZoneInfo
) -> NextSession | None:
    """The next session `course` waits for, given all its appointments; None if it waits for
    none (not active, something already held or booked, finished, or no gap rule)."""
    if course.status != "active" or any(a.status in ACTIVE for a in rows):
        return None
    completed = [a for a in rows if a.status == "completed" and a.position is not None]
    if not completed:
        return None
    last = max(completed, key=lambda a: (a.position or 0, a.starts_at, a.id))
    position = (last.position or 0) + 1
    rule = treatment.gaps.get(position)
    if position > course.planned_sessions or position > treatment.sessions_max or rule is None:
        return None
    after_day = last.starts_at.astimezone(zone).date()
    return NextSession(
        course.id,
        position,
        course.planned_sessions,
        last,
        rule,
        after_day + timedelta(days=rule.min_days),
        after_day + timedelta(days=rule.max_days),
    )


class NextSessionNotOpen(Conflict):
    """The course no longer waits for its next session (booked meanwhile, in another tab or by
    the clinic; finished; paused)."""

    code = "next-session-not-open"


async def book_next_session(
    conn: asyncpg.Connection,
    offer: Offer,
    *,
    patient_id: int,
    series_id: int,
    practitioner_id: int,
    start: datetime,
    now: datetime,
    actor: Actor,
    request_id: str | None,
) -> BookingResult:
    """Book `series_id`'s next session at `start` for its own patient, every check of a staff
    booking included; inside the gap window only (strict), so a gap past twice the target is
    possible only where the clinic's soft maximum allows it, and is then flagged for review.

    The series is locked first (then its appointments, the store's order), so two tabs or a
    double click book one session: the second finds the course no longer waiting."""
    course = await series.lock(conn, series_id)
    mine = course is not None and course.patient_id == patient_id
    if course is None or not mine or course.treatment_id != offer.treatment.id:
        raise InvalidField("series_id", "no such course of this treatment for this patient")
    rows = await appointments.for_series(conn, series_id)
    # A time the scheduler holds as a proposal gives way, as it does to staff (withdrawn by
    # book_for_patient): the patient chose for themselves.
    counted = [a for a in rows if a.status != "held"]
    wanted = waiting(course, counted, offer.treatment, offer.clinic.zone)
    if wanted is None:
        raise NextSessionNotOpen("the course does not wait for its next session any more")
    result = await book_for_patient(
        conn,
        offer,
        StaffBooking(
            patient_id=patient_id,
            first=SessionRequest(practitioner_id, start),
            sessions=None,
            session_count=None,
            series_id=series_id,
            override_reason=None,  # a patient never goes below the hard minimum
        ),
        now=now,
        actor=actor,
        request_id=request_id,
        strict=True,
        source=SOURCE,
    )
    assert [a.position for a in result.appointments] == [wanted.position]
    # The front desk need not call about the missing session any more.
    await call_tasks.close_for_next_booked(conn, series_id, position=wanted.position, now=now)
    return result
