"""Booking: free slots, course proposals, holds, turning a hold into a booking, staff bookings.

Every write happens inside the caller's transaction (see services/booking/idempotency.run), so a
course is booked whole or not at all. Whether a time is free is decided twice: first by the pure
engine (`why_not_free`, which explains *why* not), then by the exclusion constraint on insert,
which settles races between replicas. Both verdicts end as the same 409 with alternatives.

Patients from the public form (the rule decided here; worth a paragraph in the README). Whoever
fills in the form may be a stranger who knows a patient's mobile or email, so:
* a patient is matched by mobile, else email (patients.find_by_contact), and the sessions are
  booked for them;
* nothing the form sends changes a matched patient's record: not a blank field filled, not a
  consent. Every submitted value that differs from the record (names, date of birth, contact,
  allergies, medications, screening answers, consents) is kept in `form_difference` for staff
  to compare with the patient, and the sessions are flagged for review;
* the booking's answer says whether it created the patient (`BookingResult.patient_created`):
  only then may a face show the private link; a matched patient gets it through the booking
  confirmation, sent to the contacts on file;
* a new patient's consents are recorded as answered (append-only), with their source and
  wording version.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, Literal

import asyncpg

from services.booking import ratelimit
from services.booking.api.framework import ApiError, invalid
from services.booking.idempotency import Failure
from shared import outbox_plan
from shared.domain.appointment_states import ACTIVE, Status
from shared.domain.contact import ContactError, normalise_email, normalise_mobile
from shared.scheduling.availability import (
    FreeStart,
    PractitionerSchedule,
    format_local,
    free_starts,
    why_not_free,
)
from shared.scheduling.course import CourseProposal, propose_course
from shared.scheduling.loader import (
    ClinicInfo,
    TreatmentInfo,
    load_clinic,
    load_schedules,
    load_treatment,
)
from shared.store import appointments, audit, clinics, form_differences, patients, series
from shared.store.appointments import Appointment, Hold
from shared.store.audit import Actor

# Consents from the public form: source and the version of the wording shown beside the boxes.
CONSENT_SOURCE = "booking_form"
CONSENT_WORDING_VERSION = "booking-form-2026-03"
# A conflict answers with this many next free starts with the same practitioner, then with any.
ALTERNATIVES_SAME_PRACTITIONER = 3
ALTERNATIVES_ANY = 3
ALTERNATIVES_DAYS = 14  # how far ahead alternatives are looked for
# Screening answers that mean "no"; any other text (or true) flags the booking for review.
NEGATIVE_ANSWERS = frozenset({"", "-", "0", "n", "n/a", "na", "nil", "no", "none", "nothing"})

Executor = asyncpg.Connection | asyncpg.Pool
HoldState = Literal["active", "expired", "released", "booked"]
TokenFor = Callable[[int], str]


# -- what is being booked ----------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """A treatment and the clinic that offers it: everything the engine needs to know."""

    clinic: ClinicInfo
    treatment: TreatmentInfo


async def load_offer(db: Executor, treatment_id: int, *, public: bool) -> Offer | None:
    """An active treatment (and, for the public, one shown on the form), or None."""
    treatment = await load_treatment(db, treatment_id)
    if treatment is None or not treatment.active or (public and not treatment.public):
        return None
    clinic = await load_clinic(db, treatment.clinic_id)
    return None if clinic is None else Offer(clinic, treatment)


def missing_gap_rules(treatment: TreatmentInfo, count: int) -> list[int]:
    return [k for k in range(2, count + 1) if k not in treatment.gaps]


def check_session_count(treatment: TreatmentInfo, count: int, path: str) -> None:
    """A course has sessions_min..sessions_max sessions; a single visit exactly one."""
    low, high = treatment.sessions_min, treatment.sessions_max
    if not low <= count <= high:
        wanted = f"{low}" if low == high else f"{low} to {high}"
        raise InvalidField(path, f"{treatment.name} has {wanted} session(s), not {count}")
    missing = missing_gap_rules(treatment, count)
    if missing:
        raise InvalidField(
            path, f"the clinic has not set the gap before session(s) {missing} of this course"
        )


# -- failures --------------------------------------------------------------------------------


class InvalidField(Failure):
    """A 422 naming one field, for rules only the domain can check."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message

    async def as_api_error(self, db: asyncpg.Connection) -> ApiError:
        return invalid(self.path, self.message)


@dataclass(frozen=True)
class SessionConflict:
    position: int
    practitioner_id: int
    start: datetime
    reason: str


class SlotsTaken(Failure):
    """One or more sessions are not free (any more): 409 with the next free alternatives."""

    type_ = "slot-unavailable"
    title = "Conflict"

    def __init__(self, offer: Offer, conflicts: Sequence[SessionConflict], now: datetime) -> None:
        super().__init__(f"{len(conflicts)} session(s) not free")
        self.offer = offer
        self.conflicts = list(conflicts)
        self.now = now

    def describe(self) -> str:
        zone = self.offer.clinic.zone
        return "; ".join(
            f"session {c.position} at {format_local(c.start, zone)}: {c.reason}"
            for c in self.conflicts
        )

    async def as_api_error(self, db: asyncpg.Connection) -> ApiError:
        first = self.conflicts[0]
        found = await alternatives(db, self.offer, first.practitioner_id, first.start, self.now)
        return ApiError(
            409,
            self.title,
            self.describe(),
            type_=self.type_,
            conflicts=[conflict_json(c, self.offer) for c in self.conflicts],
            alternatives_for_position=first.position,
            alternatives=slots_json(found, self.offer),
            time_zone=self.offer.clinic.time_zone,
        )


class HoldLapsed(SlotsTaken):
    """The hold expired and its times were taken meanwhile."""

    type_ = "hold-expired"

    def describe(self) -> str:
        return "the hold has expired and its time is no longer free: " + super().describe()


class CourseNotPlaceable(Failure):
    """The course cannot be placed from this first start: 409 naming the position."""

    def __init__(
        self, offer: Offer, proposal: CourseProposal, first: SessionRequest, now: datetime
    ) -> None:
        super().__init__(proposal.failure or "course cannot be placed")
        self.offer = offer
        self.proposal = proposal
        self.first = first
        self.now = now

    async def as_api_error(self, db: asyncpg.Connection) -> ApiError:
        # Moving the first session is the one change that can re-place a whole course.
        found = await alternatives(
            db, self.offer, self.first.practitioner_id, self.first.start, self.now
        )
        return ApiError(
            409,
            "Conflict",
            self.proposal.failure,
            type_="course-not-placeable",
            failed_position=self.proposal.failed_position,
            placed=[
                {
                    "position": s.position,
                    "practitioner_id": s.practitioner_id,
                    "start": iso(s.start),
                }
                for s in self.proposal.sessions
            ],
            alternatives_for_position=1,
            alternatives=slots_json(found, self.offer),
            time_zone=self.offer.clinic.time_zone,
        )


class HoldNotFound(Failure):
    async def as_api_error(self, db: asyncpg.Connection) -> ApiError:
        return ApiError(
            404,
            "Not Found",
            "no hold with this token (check it was copied whole)",
            type_="not-found",
        )


class HoldFinished(Failure):
    """A released or already booked hold cannot be booked (again)."""

    def __init__(self, hold: Hold, state: HoldState, offer: Offer | None, now: datetime) -> None:
        super().__init__(f"hold {hold.id} is {state}")
        self.hold = hold
        self.state = state
        self.offer = offer
        self.now = now

    async def as_api_error(self, db: asyncpg.Connection) -> ApiError:
        if self.state == "booked":
            return ApiError(
                409, "Conflict", "this hold has already been booked", type_="hold-booked"
            )
        if self.offer is None:
            return ApiError(
                409, "Conflict", "this treatment is no longer offered", type_="not-offered"
            )
        rows = await appointments.for_hold(db, self.hold.id)
        found: list[FreeStart] = []
        if rows:
            found = await alternatives(
                db, self.offer, rows[0].practitioner_id, rows[0].starts_at, self.now
            )
        return ApiError(
            409,
            "Conflict",
            "this hold was released; choose a time again",
            type_="hold-released",
            alternatives=slots_json(found, self.offer),
        )


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def slots_json(slots: Sequence[FreeStart], offer: Offer) -> list[dict[str, Any]]:
    """Slots as the API shows them. The time fields are worked out once per start: with "any"
    practitioner several slots share one, and four weeks can list a couple of thousand."""
    zone = offer.clinic.zone
    times: dict[datetime, tuple[str, str, str, str]] = {}
    shown: list[dict[str, Any]] = []
    for slot in slots:
        fields = times.get(slot.start)
        if fields is None:
            local = slot.start.astimezone(zone)
            fields = times[slot.start] = (
                iso(slot.start),
                local.isoformat(),
                local.date().isoformat(),
                # Not f"{local:%H:%M}": strftime is the slowest step over thousands of slots.
                f"{local.hour:02d}:{local.minute:02d}",
            )
        start, start_local, local_date, local_time = fields
        shown.append(
            {
                "start": start,
                "start_local": start_local,
                "local_date": local_date,
                "local_time": local_time,
                "practitioner_id": slot.practitioner_id,
            }
        )
    return shown


def conflict_json(conflict: SessionConflict, offer: Offer) -> dict[str, Any]:
    local = conflict.start.astimezone(offer.clinic.zone)
    return {
        "position": conflict.position,
        "practitioner_id": conflict.practitioner_id,
        "start": iso(conflict.start),
        "start_local": local.isoformat(),
        "reason": conflict.reason,
    }


# -- free slots and proposals ------------------------------------------------------------------


def bookable_days(offer: Offer, first: date, last: date, now: datetime) -> tuple[date, date] | None:
    """The local dates of [first, last] that can hold a slot at all (notice and horizon)."""
    rules, zone = offer.clinic.rules, offer.clinic.zone
    low = max(first, (now + rules.min_notice).astimezone(zone).date())
    high = min(last, (now + rules.horizon).astimezone(zone).date())
    return (low, high) if low <= high else None


async def _schedules(
    db: Executor,
    offer: Offer,
    practitioner_ids: Sequence[int] | None,
    days: tuple[date, date],
    now: datetime,
) -> list[PractitionerSchedule]:
    return await load_schedules(
        db,
        offer.clinic.id,
        practitioner_ids=practitioner_ids,
        first_day=days[0],
        last_day=days[1],
        zone=offer.clinic.zone,
        now=now,
    )


async def free_slots(
    db: Executor,
    offer: Offer,
    practitioner_id: int | None,
    first_day: date,
    last_day: date,
    now: datetime,
) -> list[FreeStart]:
    """Free starts on local dates first_day..last_day with one practitioner (or any)."""
    days = bookable_days(offer, first_day, last_day, now)
    if days is None:
        return []
    ids = None if practitioner_id is None else [practitioner_id]
    schedules = await _schedules(db, offer, ids, days, now)
    return free_starts(
        offer.treatment.spec,
        schedules,
        offer.clinic.rules,
        first_day=days[0],
        last_day=days[1],
        now=now,
        step=offer.clinic.slot_step,
    )


async def works_here(db: Executor, offer: Offer, practitioner_id: int) -> bool:
    """Whether this is an active practitioner of the offer's clinic."""
    return bool(await clinics.active_practitioner_ids(db, offer.clinic.id, [practitioner_id]))


async def alternatives(
    db: Executor, offer: Offer, practitioner_id: int, after: datetime, now: datetime
) -> list[FreeStart]:
    """The next free starts from `after` on: a few with the same practitioner, then any."""
    zone = offer.clinic.zone
    first_day = max(after, now).astimezone(zone).date()
    chosen: list[FreeStart] = []
    others: list[FreeStart] = []
    # The next free times are nearly always within a day or two: look there first, and only
    # load the whole fortnight (every conflict answer pays for it) when that is not enough.
    for days in (1, ALTERNATIVES_DAYS):
        slots = await free_slots(db, offer, None, first_day, first_day + timedelta(days=days), now)
        later = [slot for slot in slots if slot.start >= after]
        same = [s for s in later if s.practitioner_id == practitioner_id]
        chosen = same[:ALTERNATIVES_SAME_PRACTITIONER]
        others = [s for s in later if s not in chosen][:ALTERNATIVES_ANY]
        if len(chosen) == ALTERNATIVES_SAME_PRACTITIONER and len(others) == ALTERNATIVES_ANY:
            break
    return chosen + others


async def propose(
    db: Executor,
    offer: Offer,
    *,
    first_start: datetime,
    practitioner_id: int,
    sessions: int,
    now: datetime,
    practitioner_path: str = "practitioner_id",
    count_path: str = "sessions",
) -> CourseProposal:
    """Every session of the course from `first_start`, any practitioner allowed for later ones
    (the preferred one first); raises InvalidField for an unknown practitioner or a number of
    sessions the course does not have."""
    treatment, zone = offer.treatment, offer.clinic.zone
    check_session_count(treatment, sessions, count_path)
    first_day = first_start.astimezone(zone).date()
    span = sum(treatment.gaps[k].max_days for k in range(2, sessions + 1))
    # Outside notice and horizon the engine answers without looking at schedules; load a
    # single day then, rather than a window that might not even be a valid date range.
    today = now.astimezone(zone).date()
    days = bookable_days(offer, first_day, first_day + timedelta(days=span), now) or (today, today)
    # The preferred practitioner wins every session they have a slot for, so a proposal from
    # their diary alone is the final answer when it is complete; only a course they cannot
    # finish needs everyone's diaries (months of them, the expensive part).
    proposal = None
    for candidates in ([practitioner_id], None):
        schedules = await _schedules(db, offer, candidates, days, now)
        if practitioner_id not in {s.practitioner_id for s in schedules}:
            raise InvalidField(practitioner_path, f"no active practitioner {practitioner_id} here")
        proposal = propose_course(
            treatment.spec,
            treatment.gaps,
            sessions,
            first_start,
            practitioner_id,
            schedules,
            offer.clinic.rules,
            now=now,
            step=offer.clinic.slot_step,
        )
        if proposal.complete or proposal.failed_position == 1:
            break
    assert proposal is not None
    return proposal


# -- planning and checking the sessions of one booking -----------------------------------------


@dataclass(frozen=True)
class SessionRequest:
    practitioner_id: int
    start: datetime
    path: str = ""  # where the session's fields are in the request ("sessions.2", or "")


@dataclass(frozen=True)
class PlannedSession:
    position: int
    practitioner_id: int
    start: datetime
    end: datetime
    gap_days: int | None
    path: str = ""

    def path_of(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name


@dataclass
class Plan:
    sessions: list[PlannedSession]
    warnings: list[str] = field(default_factory=list)
    review_reasons: list[str] = field(default_factory=list)


def plan_sessions(
    offer: Offer,
    requests: Sequence[SessionRequest],
    *,
    first_position: int,
    previous: Appointment | None,
    strict: bool,
    override_reason: str | None,
) -> Plan:
    """Number the sessions and check their order and gaps (local calendar days).

    strict (the public form): a gap outside [hard minimum, soft maximum] is refused. Otherwise
    (staff): the hard minimum is refused unless an override reason is given; the soft maximum
    only warns, and a gap beyond twice the target flags the session for clinician review.
    """
    zone, spec = offer.clinic.zone, offer.treatment.spec
    plan = Plan(sessions=[])
    before: tuple[int, date, datetime] | None = None
    if previous is not None and previous.position is not None:
        before = (previous.position, previous.starts_at.astimezone(zone).date(), previous.ends_at)
    for offset, request in enumerate(requests):
        position = first_position + offset
        session = PlannedSession(
            position,
            request.practitioner_id,
            request.start,
            request.start + spec.duration,
            None,
            request.path,
        )
        if before is not None:
            gap = _check_gap(offer, plan, session, before, strict, override_reason)
            session = replace(session, gap_days=gap)
        plan.sessions.append(session)
        before = (position, session.start.astimezone(zone).date(), session.end)
    return plan


def _check_gap(
    offer: Offer,
    plan: Plan,
    session: PlannedSession,
    before: tuple[int, date, datetime],
    strict: bool,
    override_reason: str | None,
) -> int:
    position = session.position
    previous_position, previous_day, previous_end = before
    if session.start < previous_end:
        raise InvalidField(
            session.path_of("start"),
            f"session {position} must start after session {previous_position} ends",
        )
    rule = offer.treatment.gaps.get(position)
    if rule is None:
        raise InvalidField(
            session.path_of("start"), f"the clinic has not set the gap before session {position}"
        )
    gap = (session.start.astimezone(offer.clinic.zone).date() - previous_day).days
    said = f"session {position} is {gap} days after session {previous_position}"
    if gap < rule.min_days:
        if strict or override_reason is None:
            raise InvalidField(
                session.path_of("start"), f"{said}; the minimum is {rule.min_days} days"
            )
        plan.warnings.append(f"{said}, under the minimum of {rule.min_days}: {override_reason}")
    elif gap > rule.max_days:
        if strict:
            raise InvalidField(
                session.path_of("start"), f"{said}; the maximum is {rule.max_days} days"
            )
        plan.warnings.append(f"{said}, beyond the usual maximum of {rule.max_days}")
    if gap > 2 * rule.target_days:
        plan.review_reasons.append(
            f"{said}, more than twice the target of {rule.target_days}: clinician review"
        )
    return gap


async def find_conflicts(
    conn: Executor, offer: Offer, sessions: Sequence[PlannedSession], now: datetime
) -> list[SessionConflict]:
    """Sessions that are not free (with why), checked in time order, each against the others
    too; raises InvalidField for a practitioner who is not active at this clinic."""
    zone = offer.clinic.zone
    local_days = [s.start.astimezone(zone).date() for s in sessions]
    today = now.astimezone(zone).date()
    days = bookable_days(offer, min(local_days), max(local_days), now) or (today, today)
    ids = sorted({s.practitioner_id for s in sessions})
    loaded = {s.practitioner_id: s for s in await _schedules(conn, offer, ids, days, now)}
    for session in sessions:
        if session.practitioner_id not in loaded:
            raise InvalidField(
                session.path_of("practitioner_id"),
                f"no active practitioner {session.practitioner_id} at this clinic",
            )
    conflicts: list[SessionConflict] = []
    for session in sorted(sessions, key=lambda s: s.start):
        schedule = loaded[session.practitioner_id]
        reason = why_not_free(
            offer.treatment.spec,
            schedule,
            offer.clinic.rules,
            session.start,
            now=now,
            step=offer.clinic.slot_step,
        )
        if reason is not None:
            conflicts.append(
                SessionConflict(session.position, session.practitioner_id, session.start, reason)
            )
        # Later sessions of this same booking must not overlap this one.
        busy = (*schedule.busy, offer.treatment.spec.occupied(session.start))
        loaded[session.practitioner_id] = replace(schedule, busy=busy)
    return sorted(conflicts, key=lambda c: c.position)


async def insert_sessions(
    conn: asyncpg.Connection,
    offer: Offer,
    sessions: Sequence[PlannedSession],
    *,
    status: Status,
    patient_id: int | None,
    series_id: int | None,
    hold_id: int | None,
    needs_review: bool,
    review_reasons: list[str],
    source: str,
    actor: Actor,
    now: datetime,
    request_id: str | None = None,
) -> list[int]:
    """Insert every session; expired holds in the way are released first. The exclusion
    constraint is the final word: a time taken meanwhile raises SlotsTaken (and the caller's
    transaction, hence the whole course, is rolled back)."""
    spec = offer.treatment.spec
    # Time order everywhere: concurrent bookings then lock rows in the same order, which keeps
    # deadlocks rare (idempotency.run retries the few that remain).
    ordered = sorted(sessions, key=lambda s: s.start)
    await appointments.lock_practitioner_calendars(conn, [s.practitioner_id for s in ordered])
    await _release_expired_in_the_way(conn, offer, ordered, now=now, request_id=request_id)
    ids: dict[int, int] = {}
    for session in ordered:
        try:
            ids[session.position] = await appointments.insert(
                conn,
                clinic_id=offer.clinic.id,
                practitioner_id=session.practitioner_id,
                treatment_id=offer.treatment.id,
                patient_id=patient_id,
                series_id=series_id,
                position=session.position if offer.treatment.is_course else None,
                hold_id=hold_id,
                status=status,
                starts_at=session.start,
                ends_at=session.end,
                buffer_before=spec.buffer_before,
                buffer_after=spec.buffer_after,
                needs_review=needs_review,
                review_reasons=review_reasons,
                source=source,
                actor=actor.label,
                now=now,
            )
        except asyncpg.ExclusionViolationError:
            taken = SessionConflict(
                session.position,
                session.practitioner_id,
                session.start,
                "taken by another booking a moment ago",
            )
            raise SlotsTaken(offer, [taken], now) from None
    return [ids[s.position] for s in sessions]


async def _release_expired_in_the_way(
    conn: asyncpg.Connection,
    offer: Offer,
    ordered: Sequence[PlannedSession],
    *,
    now: datetime,
    request_id: str | None,
) -> None:
    # Availability already ignores expired holds, but the exclusion constraint does not until
    # their rows are cancelled; the sweep may not have run yet.
    released = 0
    for session in ordered:
        occupied = offer.treatment.spec.occupied(session.start)
        released += await appointments.release_expired_holds(
            conn,
            now=now,
            practitioner_id=session.practitioner_id,
            overlapping=(occupied.start, occupied.end),
        )
    if released:
        await audit.record(
            conn,
            at=now,
            actor=audit.SYSTEM,
            action="hold.expire",
            entity="appointment",
            entity_id=None,
            reason="expired hold in the way of a booking",
            details={"appointments": released},
            request_id=request_id,
        )


# -- holds -----------------------------------------------------------------------------------


def hold_token(secret: str, hold_id: int) -> str:
    """The hold's token: unguessable without the secret key, and derivable again from the id, so
    an idempotent retry can be answered while the database keeps only its hash."""
    mac = hmac.new(secret.encode(), f"regimen-hold:{hold_id}".encode(), hashlib.sha256).digest()
    return "hold_" + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class HoldCreated:
    hold_id: int
    token: str
    expires_at: datetime
    appointment_ids: list[int]
    sessions: list[PlannedSession]


async def create_hold(
    conn: asyncpg.Connection,
    offer: Offer,
    requests: Sequence[SessionRequest],
    *,
    token_for: TokenFor,
    now: datetime,
    actor: Actor,
    request_id: str | None,
    client: bytes | None = None,
) -> HoldCreated:
    """Hold one slot or a whole course (all sessions re-checked here, whatever the form said).

    `client` (ratelimit.client_key) is recorded on the hold and caps the holds one client
    address may have running (a 429 beyond REGIMEN_HOLDS_PER_ADDRESS)."""
    check_session_count(offer.treatment, len(requests), "sessions")
    if client is not None:
        await ratelimit.limit_holds(conn, client, now=now)
    plan = plan_sessions(
        offer, requests, first_position=1, previous=None, strict=True, override_reason=None
    )
    conflicts = await find_conflicts(conn, offer, plan.sessions, now)
    if conflicts:
        raise SlotsTaken(offer, conflicts, now)
    expires_at = now + offer.clinic.hold_time
    # The token derives from the id; a random placeholder keeps the unique hash column happy
    # for the moment between the two statements.
    hold_id = await appointments.insert_hold(
        conn,
        clinic_id=offer.clinic.id,
        treatment_id=offer.treatment.id,
        token_hash=secrets.token_bytes(32),
        expires_at=expires_at,
        now=now,
        client_hash=client,
    )
    token = token_for(hold_id)
    await appointments.set_hold_token_hash(conn, hold_id, token_hash(token))
    ids = await insert_sessions(
        conn,
        offer,
        plan.sessions,
        status="held",
        patient_id=None,
        series_id=None,
        hold_id=hold_id,
        needs_review=False,
        review_reasons=[],
        source="public",
        actor=actor,
        now=now,
        request_id=request_id,
    )
    await audit.record(
        conn,
        at=now,
        actor=actor,
        action="hold.create",
        entity="booking_hold",
        entity_id=hold_id,
        details={"treatment_id": offer.treatment.id, "appointment_ids": ids},
        request_id=request_id,
    )
    return HoldCreated(hold_id, token, expires_at, ids, plan.sessions)


@dataclass(frozen=True)
class HoldView:
    hold: Hold
    state: HoldState
    offer: Offer | None
    sessions: list[Appointment]


def hold_state(hold: Hold, rows: Sequence[Appointment], now: datetime) -> HoldState:
    if any(row.patient_id is not None for row in rows):
        return "booked"
    if hold.released_at is not None:
        return "released"
    # A hold is whole or gone: if any of its rows was cancelled it is re-taken like an
    # expired one, all sessions or none.
    if hold.expires_at <= now or not rows or any(row.status != "held" for row in rows):
        return "expired"
    return "active"


def _shown_sessions(rows: Sequence[Appointment], state: HoldState) -> list[Appointment]:
    if state == "booked":
        return [row for row in rows if row.patient_id is not None]
    return list(rows)


async def _view(db: Executor, token: str, now: datetime, *, for_update: bool) -> HoldView | None:
    hold = await appointments.hold_by_token_hash(db, token_hash(token), for_update=for_update)
    if hold is None:
        return None
    rows = await appointments.for_hold(db, hold.id)
    state = hold_state(hold, rows, now)
    offer = await load_offer(db, hold.treatment_id, public=False)
    return HoldView(hold, state, offer, _shown_sessions(rows, state))


async def hold_view(db: Executor, token: str, now: datetime) -> HoldView | None:
    return await _view(db, token, now, for_update=False)


async def release_hold(
    conn: asyncpg.Connection, token: str, *, now: datetime, actor: Actor, request_id: str | None
) -> None:
    """Give the held times back at once (releasing twice is fine; a booked hold is a 409)."""
    view = await _view(conn, token, now, for_update=True)
    if view is None:
        raise HoldNotFound()
    if view.state == "booked":
        raise HoldFinished(view.hold, view.state, view.offer, now)
    if view.state == "released":
        return
    await appointments.end_hold(conn, view.hold.id, now=now)
    for row in view.sessions:
        if row.status == "held":
            await appointments.transition(
                conn, row.id, "cancelled", actor=actor.label, now=now, reason="hold released"
            )
    await audit.record(
        conn,
        at=now,
        actor=actor,
        action="hold.release",
        entity="booking_hold",
        entity_id=view.hold.id,
        request_id=request_id,
    )


# -- patients from the public form ---------------------------------------------------------------


@dataclass(frozen=True)
class PatientForm:
    first_name: str
    last_name: str
    mobile: str
    email: str | None
    date_of_birth: date
    allergies: str
    medications: str
    screening: dict[str, bool | str]


@dataclass(frozen=True)
class ConsentAnswers:
    care_sms: bool
    care_email: bool
    marketing_sms: bool
    marketing_email: bool


@dataclass(frozen=True)
class ResolvedPatient:
    id: int
    created: bool
    differs: dict[str, Any]  # submitted values that differ from the stored record


def _is_positive(answer: bool | str) -> bool:
    if isinstance(answer, bool):
        return answer
    return answer.strip().casefold() not in NEGATIVE_ANSWERS


def screening_reasons(form: PatientForm) -> list[str]:
    """Why the sessions need a clinician's review before check-in (empty: no reason)."""
    reasons = [
        f"screening: '{key}' answered positive"
        for key, answer in sorted(form.screening.items())
        if _is_positive(answer)
    ]
    if _is_positive(form.allergies):
        reasons.append("allergies reported on the booking form")
    if _is_positive(form.medications):
        reasons.append("medications reported on the booking form")
    return reasons


def _normalised_contact(form: PatientForm, clinic: ClinicInfo) -> tuple[str, str | None]:
    try:
        mobile = normalise_mobile(form.mobile, clinic.region, countries=clinic.texts_to)
    except ContactError as error:
        raise InvalidField("patient.mobile", str(error)) from None
    email = None
    if form.email:
        try:
            email = normalise_email(form.email)
        except ContactError as error:
            raise InvalidField("patient.email", str(error)) from None
    return mobile, email


def _same_text(stored: str | None, given: str | None) -> bool:
    return (stored or "").strip().casefold() == (given or "").strip().casefold()


def _differences(
    stored: patients.Patient, form: PatientForm, mobile: str, email: str | None
) -> dict[str, Any]:
    """The submitted values that differ from the stored record, blanks on the record included
    (the form may not fill them: whoever typed them may not be this patient)."""
    differs: dict[str, Any] = {}
    given: dict[str, Any] = {
        "first_name": form.first_name,
        "last_name": form.last_name,
        "mobile": mobile,
        "email": email,
        "date_of_birth": form.date_of_birth,
        "allergies": form.allergies,
        "medications": form.medications,
    }
    for name, value in given.items():
        current = getattr(stored, name)
        if value in (None, ""):
            continue
        if name in ("allergies", "medications") and not _is_positive(value):
            if not _is_positive(current or ""):
                continue  # "none" where the record is blank says the same
        if isinstance(value, str) and not _same_text(current, value):
            differs[name] = value
        elif not isinstance(value, str) and current != value:
            differs[name] = value.isoformat() if isinstance(value, date) else value
    screening = {
        key: answer
        for key, answer in form.screening.items()
        if stored.screening.get(key) != answer
        # "no" to a question the record has no answer to adds nothing to review
        and (key in stored.screening or _is_positive(answer))
    }
    if screening:
        differs["screening"] = screening
    return differs


async def _lock_contact(conn: asyncpg.Connection, clinic_id: int, keys: Sequence[str]) -> None:
    # Two bookings by the same new patient at once must not create two records: serialise
    # find-or-create per contact (transaction-scoped advisory locks, taken in a fixed order).
    for key in sorted(keys):
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            f"regimen.patient-contact:{clinic_id}:{key}",
        )


async def resolve_patient(
    conn: asyncpg.Connection,
    clinic: ClinicInfo,
    form: PatientForm,
    *,
    now: datetime,
    actor: Actor,
    request_id: str | None,
) -> ResolvedPatient:
    """Find the patient by mobile or email, or create one (see the module doc for the rules)."""
    if form.date_of_birth >= now.astimezone(clinic.zone).date():
        raise InvalidField("patient.date_of_birth", "must be in the past")
    mobile, email = _normalised_contact(form, clinic)
    await ratelimit.limit_mobile(conn, mobile, now=now)
    await _lock_contact(conn, clinic.id, [mobile, *([email.casefold()] if email else [])])
    existing = await patients.find_by_contact(conn, clinic_id=clinic.id, mobile=mobile, email=email)
    if existing is None:
        patient_id = await patients.create(
            conn,
            clinic_id=clinic.id,
            first_name=form.first_name,
            last_name=form.last_name,
            mobile=mobile,
            email=email,
            date_of_birth=form.date_of_birth,
            allergies=form.allergies,
            medications=form.medications,
            screening=dict(form.screening),
            now=now,
        )
        await audit.record(
            conn,
            at=now,
            actor=actor,
            action="patient.create",
            entity="patient",
            entity_id=patient_id,
            patient_id=patient_id,
            details={"source": CONSENT_SOURCE},
            request_id=request_id,
        )
        return ResolvedPatient(patient_id, True, {})
    return ResolvedPatient(existing.id, False, _differences(existing, form, mobile, email))


async def _consents_differing(
    conn: asyncpg.Connection, patient_id: int, consents: ConsentAnswers
) -> dict[str, bool]:
    """The consents the form answered otherwise than the patient's current ones."""
    current = await patients.current_consents(conn, patient_id)
    answers = {kind: getattr(consents, kind) for kind in patients.CONSENT_KINDS}
    return {
        kind: granted
        for kind, granted in answers.items()
        if granted != (kind in current and current[kind].granted)
    }


async def record_consents(
    conn: asyncpg.Connection,
    patient_id: int,
    consents: ConsentAnswers,
    *,
    now: datetime,
    actor: Actor,
    request_id: str | None,
) -> None:
    answers = {kind: getattr(consents, kind) for kind in patients.CONSENT_KINDS}
    for kind, granted in answers.items():
        await patients.record_consent(
            conn,
            patient_id,
            kind=kind,
            granted=granted,
            source=CONSENT_SOURCE,
            wording_version=CONSENT_WORDING_VERSION,
            now=now,
        )
    await audit.record(
        conn,
        at=now,
        actor=actor,
        action="consent.record",
        entity="patient",
        entity_id=patient_id,
        patient_id=patient_id,
        details={"consents": answers, "wording_version": CONSENT_WORDING_VERSION},
        request_id=request_id,
    )


# -- bookings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BookingResult:
    offer: Offer
    patient_id: int
    series_id: int | None
    appointments: list[Appointment]
    warnings: list[str]
    # Whether this booking created the patient: only then may the answer reveal the private link
    # (a matched patient may not be whoever filled in the form).
    patient_created: bool = False
    # Whether the submitted answers alone (screening, allergies, medications) flag a review:
    # what may be said to whoever submitted them, unlike a comparison with the record.
    answers_need_review: bool = False


async def book_hold(
    conn: asyncpg.Connection,
    token: str,
    form: PatientForm,
    consents: ConsentAnswers,
    *,
    now: datetime,
    actor: Actor,
    request_id: str | None,
) -> BookingResult:
    """Turn a hold into a booking: patient, consents, series, every session `booked`.

    An expired hold whose times are still free is re-taken (its rows may already have been
    swept); if a time was taken meanwhile, nothing is booked and the answer is a 409 with
    alternatives.
    """
    view = await _view(conn, token, now, for_update=True)
    if view is None:
        raise HoldNotFound()
    if view.state in ("booked", "released") or view.offer is None:
        raise HoldFinished(view.hold, view.state, view.offer, now)
    offer = view.offer
    planned = _planned_from_rows(view.sessions, offer)
    if view.state == "expired":
        await _cancel_own_held(conn, view.sessions, now=now)
        conflicts = await find_conflicts(conn, offer, planned, now)
        if conflicts:
            raise HoldLapsed(offer, conflicts, now)
    patient = await resolve_patient(
        conn, offer.clinic, form, now=now, actor=actor, request_id=request_id
    )
    differs = dict(patient.differs)
    if patient.created:
        await record_consents(
            conn, patient.id, consents, now=now, actor=actor, request_id=request_id
        )
    else:
        changed = await _consents_differing(conn, patient.id, consents)
        if changed:
            differs["consents"] = changed
    reasons = screening_reasons(form)
    answers_need_review = bool(reasons)
    if differs:
        reasons.append(
            "booking form differs from the patient record ("
            + ", ".join(sorted(differs))
            + "): compare the form's answers with the patient"
        )
    series_id = await _new_series(conn, offer, patient.id, len(planned), now=now)
    held = list(view.sessions)
    if view.state == "expired":
        # Re-take the times under the same hold, then book them like a live hold's.
        ids = await insert_sessions(
            conn,
            offer,
            planned,
            status="held",
            patient_id=None,
            series_id=None,
            hold_id=view.hold.id,
            needs_review=False,
            review_reasons=[],
            source="public",
            actor=actor,
            now=now,
            request_id=request_id,
        )
        held = [await _get(conn, i) for i in ids]
    booked = await _book_held_rows(conn, held, patient, series_id, reasons, now=now, actor=actor)
    await appointments.end_hold(conn, view.hold.id, now=now)
    if differs:
        # Not in the appointment's history or the audit log: those are append-only, and these
        # values (maybe a stranger's) must go when the patient is erased.
        await form_differences.insert(
            conn,
            clinic_id=offer.clinic.id,
            patient_id=patient.id,
            hold_id=view.hold.id,
            appointment_ids=[a.id for a in booked],
            submitted=differs,
            now=now,
        )
    await _audit_booking(
        conn,
        offer,
        patient.id,
        series_id,
        booked,
        now=now,
        actor=actor,
        request_id=request_id,
        details={
            "hold_id": view.hold.id,
            "retaken": view.state == "expired",
            "patient_created": patient.created,
            # Which fields differed, never their values (the log is append-only).
            **({"form_differs": sorted(differs)} if differs else {}),
        },
    )
    # The confirmation and reminders commit with the booking or not at all.
    await outbox_plan.plan_booking(
        conn,
        appointment_ids=[a.id for a in booked],
        patient_id=patient.id,
        clinic_id=offer.clinic.id,
        now=now,
    )
    return BookingResult(
        offer,
        patient.id,
        series_id,
        booked,
        [],
        patient_created=patient.created,
        answers_need_review=answers_need_review,
    )


def _planned_from_rows(rows: Sequence[Appointment], offer: Offer) -> list[PlannedSession]:
    ordered = sorted(rows, key=lambda r: r.starts_at)
    return [
        PlannedSession(
            row.position or index + 1, row.practitioner_id, row.starts_at, row.ends_at, None
        )
        for index, row in enumerate(ordered)
    ]


async def _cancel_own_held(
    conn: asyncpg.Connection, rows: Sequence[Appointment], *, now: datetime
) -> None:
    for row in rows:
        if row.status == "held":
            await appointments.transition(
                conn, row.id, "cancelled", actor="system", now=now, reason="hold expired"
            )


async def _new_series(
    conn: asyncpg.Connection, offer: Offer, patient_id: int, planned: int, *, now: datetime
) -> int | None:
    if not offer.treatment.is_course:
        return None
    return await series.create(
        conn,
        clinic_id=offer.clinic.id,
        patient_id=patient_id,
        treatment_id=offer.treatment.id,
        planned_sessions=planned,
        now=now,
    )


async def _get(conn: asyncpg.Connection, appointment_id: int) -> Appointment:
    found = await appointments.get(conn, appointment_id)
    assert found is not None
    return found


async def _book_held_rows(
    conn: asyncpg.Connection,
    rows: Sequence[Appointment],
    patient: ResolvedPatient,
    series_id: int | None,
    reasons: list[str],
    *,
    now: datetime,
    actor: Actor,
) -> list[Appointment]:
    booked = []
    for row in sorted(rows, key=lambda r: r.starts_at):
        await appointments.assign_patient(
            conn,
            row.id,
            patient_id=patient.id,
            series_id=series_id,
            needs_review=bool(reasons),
            review_reasons=reasons,
        )
        moved = await appointments.transition(
            conn, row.id, "booked", actor=actor.label, now=now, reason="booked"
        )
        assert moved is not None
        booked.append(moved)
    return booked


async def _audit_booking(
    conn: asyncpg.Connection,
    offer: Offer,
    patient_id: int,
    series_id: int | None,
    booked: Sequence[Appointment],
    *,
    now: datetime,
    actor: Actor,
    request_id: str | None,
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> None:
    await audit.record(
        conn,
        at=now,
        actor=actor,
        action="booking.create",
        entity="series" if series_id is not None else "appointment",
        entity_id=series_id if series_id is not None else booked[0].id,
        patient_id=patient_id,
        reason=reason,
        details={
            "treatment_id": offer.treatment.id,
            "appointment_ids": [a.id for a in booked],
            **(details or {}),
        },
        request_id=request_id,
    )


@dataclass(frozen=True)
class StaffBooking:
    """What staff asked for: one start (a single visit, a whole proposed course, or the next
    session of `series_id`), or an explicit list of sessions."""

    patient_id: int
    first: SessionRequest | None
    sessions: list[SessionRequest] | None
    session_count: int | None
    series_id: int | None
    override_reason: str | None


async def book_for_patient(
    conn: asyncpg.Connection,
    offer: Offer,
    request: StaffBooking,
    *,
    now: datetime,
    actor: Actor,
    request_id: str | None,
) -> BookingResult:
    """Book directly (no hold) for a known patient, every session or none."""
    patient = await patients.get(conn, request.patient_id)
    if patient is None or patient.clinic_id != offer.clinic.id or patient.erased_at is not None:
        raise InvalidField("patient_id", f"no patient {request.patient_id} at this clinic")
    existing, previous = await _series_so_far(conn, offer, request)
    requests, planned_total = await _staff_requests(conn, offer, request, existing, now)
    first_position = 1 if previous is None else 1 + (previous.position or 0)
    plan = plan_sessions(
        offer,
        requests,
        first_position=first_position,
        previous=previous,
        strict=False,
        override_reason=request.override_reason,
    )
    if offer.treatment.is_course and plan.sessions[-1].position > offer.treatment.sessions_max:
        raise InvalidField(
            "sessions" if request.sessions else "start",
            f"{offer.treatment.name} has at most {offer.treatment.sessions_max} sessions",
        )
    conflicts = await find_conflicts(conn, offer, plan.sessions, now)
    if conflicts:
        raise SlotsTaken(offer, conflicts, now)
    series_id = existing.id if existing is not None else None
    if series_id is None:
        series_id = await _new_series(conn, offer, patient.id, planned_total, now=now)
    ids = await insert_sessions(
        conn,
        offer,
        plan.sessions,
        status="booked",
        patient_id=patient.id,
        series_id=series_id,
        hold_id=None,
        needs_review=bool(plan.review_reasons),
        review_reasons=plan.review_reasons,
        source="staff",
        actor=actor,
        now=now,
        request_id=request_id,
    )
    booked = [await _get(conn, i) for i in ids]
    await _audit_booking(
        conn,
        offer,
        patient.id,
        series_id,
        booked,
        now=now,
        actor=actor,
        request_id=request_id,
        reason=request.override_reason or "",
        details={"warnings": plan.warnings} if plan.warnings else None,
    )
    # The confirmation and reminders commit with the booking or not at all.
    await outbox_plan.plan_booking(
        conn,
        appointment_ids=[a.id for a in booked],
        patient_id=patient.id,
        clinic_id=offer.clinic.id,
        now=now,
    )
    return BookingResult(offer, patient.id, series_id, booked, plan.warnings)


async def _series_so_far(
    conn: asyncpg.Connection, offer: Offer, request: StaffBooking
) -> tuple[series.Series | None, Appointment | None]:
    """The series to add to (if any) and its last session that still counts."""
    if request.series_id is None:
        return None, None
    found = await series.get(conn, request.series_id)
    if (
        found is None
        or found.patient_id != request.patient_id
        or found.treatment_id != offer.treatment.id
    ):
        raise InvalidField("series_id", "no such course of this treatment for this patient")
    if found.status != "active":
        raise InvalidField("series_id", f"the course is {found.status}")
    counted = [
        a
        for a in await appointments.for_series(conn, found.id)
        if (a.status in ACTIVE or a.status == "completed") and a.position is not None
    ]
    previous = max(counted, key=lambda a: a.position or 0, default=None)
    return found, previous


async def _staff_requests(
    conn: asyncpg.Connection,
    offer: Offer,
    request: StaffBooking,
    existing: series.Series | None,
    now: datetime,
) -> tuple[list[SessionRequest], int]:
    """The sessions to book and the course's planned number of sessions."""
    treatment = offer.treatment
    count = request.session_count
    if count is not None and treatment.is_course:
        check_session_count(treatment, count, "session_count")
    elif count is not None and count != 1:
        raise InvalidField("session_count", f"{treatment.name} is a single visit")
    if request.sessions is not None:
        wanted = request.sessions
    elif request.first is None:
        raise InvalidField("start", "give a start (with practitioner_id) or a list of sessions")
    elif treatment.is_course and existing is None:
        wanted = await _proposed(conn, offer, request.first, count, now)
    else:
        wanted = [request.first]
    if not treatment.is_course and len(wanted) != 1:
        raise InvalidField("sessions", f"{treatment.name} is a single visit: give one session")
    planned = count or max(treatment.sessions_min, len(wanted))
    if treatment.is_course and existing is None and len(wanted) > planned:
        raise InvalidField("sessions", f"{len(wanted)} sessions, more than the {planned} planned")
    return wanted, planned


async def _proposed(
    conn: asyncpg.Connection,
    offer: Offer,
    first: SessionRequest,
    count: int | None,
    now: datetime,
) -> list[SessionRequest]:
    proposal = await propose(
        conn,
        offer,
        first_start=first.start,
        practitioner_id=first.practitioner_id,
        sessions=count or offer.treatment.sessions_min,
        now=now,
        count_path="session_count",
    )
    if not proposal.complete:
        raise CourseNotPlaceable(offer, proposal, first, now)
    return [SessionRequest(s.practitioner_id, s.start) for s in proposal.sessions]
