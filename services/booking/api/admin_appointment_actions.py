"""Appointment actions in the admin API: the state changes (confirm, check-in, complete,
no-show), clearing a clinician review, cancelling and rescheduling. The reads, and how an
appointment is shown to each role, are in `admin_appointments`.

Roles, by what each job needs:

| endpoint                                   | admin | front_desk | clinician |
| ------------------------------------------ | ----- | ---------- | --------- |
| confirm (on the patient's behalf)          | yes   | yes        | no        |
| check-in                                   | yes   | yes        | no        |
| no-show                                    | yes   | yes        | no        |
| cancel (also inside the notice, with reason) | yes | yes        | no        |
| complete (with the session record)         | yes   | no         | yes       |
| review (clear needs_review, with a note)   | yes   | no         | yes       |
| reschedule                                 | yes   | yes        | yes       |
| reschedule below the hard minimum gap      | yes   | no (403)   | yes       |
| undo a no-show recorded by mistake         | yes   | yes        | no        |

Every action needs `If-Match` with the version last read (428 without, 412 when stale), so two
front-desk screens cannot overwrite each other; undoing a no-show takes the version in its body
(`expected_version`) instead. Every change is written to the audit log in the
change's own transaction; each answers the appointment as the caller's role reads it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo

import asyncpg
from pydantic import BaseModel, Field, StrictBool

from services.booking.api import API
from services.booking.api.admin_appointments import (
    DESK_DETAIL,
    TAG,
    AppointmentDeskDetail,
    AppointmentDetail,
    appointment_detail,
    change_of,
)
from services.booking.api.admin_bookings import ScreeningAnswers, ScreeningDetails, given_answers
from services.booking.api.common import ALL_STAFF, CLINICAL, DESK
from services.booking.api.fields import Body, Id, Instant, OverrideReason, Reason, ShortText, text
from services.booking.api.framework import Ctx, Handler, invalid
from services.booking.api.move_views import GapOut, ShiftOut, gap_out, shift_out
from services.booking.api.session_record_views import RecordIn
from services.booking.domain import actions, reschedule, screening_checks, session_records
from shared.db.transactions import in_transaction
from shared.domain import cancellations
from shared.store.appointments import Appointment
from shared.store.series import SeriesStatus
from shared.store.staff_tokens import Role

ACTION_ERRORS = (409, 412, 428)

# A clinician's note clearing a review flag.
ReviewNote = text(2000, min_length=1)


# -- output models ---------------------------------------------------------------------------------


class _RescheduleFacts(BaseModel):
    version: int = Field(description="the appointment's new version (also the ETag)")
    gaps: list[GapOut]
    warnings: list[str]
    review_notes: list[str]
    overridden: list[str] = Field(description="hard-minimum breaches accepted by the override")
    proposed_shifts: list[ShiftOut] = Field(
        description="new times for later sessions the move invalidates; resend with "
        "shift_later: true to apply them"
    )
    applied_shifts: list[ShiftOut]
    shift_failure: str | None
    flagged_for_review: list[int]


class RescheduleDeskResult(_RescheduleFacts):
    appointment: AppointmentDeskDetail


class RescheduleResult(_RescheduleFacts):
    appointment: AppointmentDetail


class _CancelFacts(BaseModel):
    version: int
    cancelled_appointment_ids: list[int]
    override_used: bool
    series_status: SeriesStatus | None


class CancelDeskResult(_CancelFacts):
    appointment: AppointmentDeskDetail


class CancelResult(_CancelFacts):
    appointment: AppointmentDetail


# -- input models ----------------------------------------------------------------------------------


class CancelBody(Body):
    reason: Reason
    scope: Literal["this", "rest_of_course"] = "this"
    override: StrictBool = Field(False, description="cancel inside the cancellation notice anyway")
    override_reason: OverrideReason | None = Field(
        None, description="required with override: true; logged"
    )


class ReviewBody(Body):
    note: ReviewNote


class UndoNoShowBody(Body):
    reason: Reason = Field(description="why the no-show was wrong, for the audit log")
    expected_version: Id = Field(description="the appointment's version as last read (ETag)")
    attended: StrictBool = Field(
        False,
        description="the patient came and was seen: the appointment becomes checked in (the "
        "check-in window has closed), ready to be completed",
    )


class RescheduleBody(Body):
    starts_at: Instant
    practitioner_id: Id | None = Field(None, description="default: the same practitioner")
    reason: ShortText = ""
    override_reason: OverrideReason | None = Field(
        None, description="clinician or admin: accept a gap below the hard minimum; logged"
    )
    shift_later: StrictBool = Field(
        False, description="apply the proposed shifts of later sessions"
    )


# -- actions ---------------------------------------------------------------------------------------

R = TypeVar("R")


async def _act(ctx: Ctx, action: Callable[..., Awaitable[R]], **inputs: Any) -> R:
    """Apply a domain action to the appointment in the path at the If-Match version, as the
    caller; every action shares this, so each is checked and attributed the same way."""
    version = ctx.if_match()
    change = change_of(ctx)

    async def work(conn: asyncpg.Connection) -> R:
        return await action(
            conn, ctx.path["appointment_id"], **inputs, expected_version=version, change=change
        )

    return await in_transaction(ctx.pool, work)


def _state_action(
    name: str,
    verb: str,
    *,
    summary: str,
    roles: tuple[Role, ...],
    action: actions.StateAction,
    description: str,
) -> Handler:
    """Register `POST .../{appointment_id}/<verb>`: a state change with no body, only If-Match.
    `name` is the operationId, `description` the operation's description."""

    async def handler(ctx: Ctx) -> AppointmentDetail:
        return await appointment_detail(ctx, await _act(ctx, actions.act, state=action))

    handler.__name__ = handler.__qualname__ = name
    handler.__doc__ = description
    return API.route(
        "POST",
        "/api/v1/appointments/{appointment_id}/" + verb,
        summary=summary,
        tag=TAG,
        roles=roles,
        response=AppointmentDetail,
        views={role: view for role, view in DESK_DETAIL.items() if role in roles},
        errors=ACTION_ERRORS,
    )(handler)


confirm_appointment = _state_action(
    "confirm_appointment",
    "confirm",
    summary="Confirm on the patient's behalf",
    roles=DESK,
    action=actions.CONFIRM,
    description="booked → confirmed, when the patient confirms by phone or at the desk.",
)


class CheckInBody(Body):
    screening: ScreeningAnswers | None = Field(
        None,
        max_length=50,
        description="the patient's yes/no re-confirmation of every screening question that "
        "applies; may be left out only when they were answered for this appointment within the "
        "last 7 days",
    )
    screening_details: ScreeningDetails | None = Field(
        None, max_length=50, description="what the patient said about an answer, by code"
    )


@API.route(
    "POST",
    "/api/v1/appointments/{appointment_id}/check-in",
    summary="Check the patient in",
    tag=TAG,
    roles=DESK,
    body=CheckInBody,
    body_optional=True,
    response=AppointmentDetail,
    views={role: view for role, view in DESK_DETAIL.items() if role in DESK},
    errors=(*ACTION_ERRORS, 422),
)
async def check_in_appointment(ctx: Ctx) -> AppointmentDetail:
    """booked or confirmed → checked_in, from 2 h before the start until the end plus the
    clinic's no-show grace. The screening answers are re-confirmed first: without a recent answer
    for this appointment to every question that applies, 409 screening-not-confirmed names the
    missing ones (`missing`). A new yes (where the last answer was no, or a first yes) is stored,
    flags the appointment for clinician review with the question named, and the check-in is
    refused (409 needs-review) until a clinician reviews it, as for any pending review.
    Refused too (409 adverse-event-hold, naming the events in `adverse_event_ids`) while an
    adverse event of the patient holds their next session, until a clinician clears it."""
    body: CheckInBody = ctx.body
    answers = given_answers(body.screening, body.screening_details, "screening")
    version = ctx.if_match()
    change = change_of(ctx)
    appointment_id = ctx.path["appointment_id"]

    async def work(conn: asyncpg.Connection) -> Appointment | screening_checks.CheckInScreening:
        screened = await screening_checks.check_in(
            conn, appointment_id, answers, expected_version=version, change=change
        )
        if screened.flagged is not None:
            return screened  # committed: the answers and the flag stay
        return await actions.act(
            conn, appointment_id, state=actions.CHECK_IN, expected_version=version, change=change
        )

    done = await in_transaction(ctx.pool, work)
    if isinstance(done, screening_checks.CheckInScreening):
        assert done.flagged is not None
        raise screening_checks.ScreeningFlagged(done.flagged)
    return await appointment_detail(ctx, done)


no_show_appointment = _state_action(
    "no_show_appointment",
    "no-show",
    summary="Record a no-show",
    roles=DESK,
    action=actions.NO_SHOW,
    description="booked or confirmed → no_show, only once the end plus the clinic's grace has "
    "passed.",
)


class CompleteBody(Body):
    record: RecordIn | None = Field(
        None,
        description="what was done: required (product and lot_number at least) for a course "
        "treatment's session, optional for a consultation",
    )


@API.route(
    "POST",
    "/api/v1/appointments/{appointment_id}/complete",
    summary="Record the session as done, with its session record",
    tag=TAG,
    roles=CLINICAL,
    body=CompleteBody,
    body_optional=True,
    response=AppointmentDetail,
    errors=ACTION_ERRORS,
)
async def complete_appointment(ctx: Ctx) -> AppointmentDetail:
    """checked_in → completed, with the session's `record` in the same transaction: a record
    that is refused (422 naming the field, e.g. `record.lot_expiry` for a lot past its expiry
    on the session's date) completes nothing. A course treatment's session needs a record with
    `product` and `lot_number`; a consultation may be completed with no body. The answer shows
    the record under `session_record`."""
    body: CompleteBody = ctx.body
    record = body.record.fields() if body.record is not None else None
    return await appointment_detail(ctx, await _act(ctx, session_records.complete, record=record))


@API.route(
    "POST",
    "/api/v1/appointments/{appointment_id}/review",
    summary="Clear the clinician-review flag",
    tag=TAG,
    roles=CLINICAL,
    body=ReviewBody,
    response=AppointmentDetail,
    errors=ACTION_ERRORS,
)
async def review_appointment(ctx: Ctx) -> AppointmentDetail:
    """A clinician has looked at what flagged the appointment (screening answers, a long gap)
    and clears it with a note; check-in is possible again."""
    body: ReviewBody = ctx.body
    return await appointment_detail(ctx, await _act(ctx, actions.review, note=body.note))


@API.route(
    "POST",
    "/api/v1/appointments/{appointment_id}/cancel",
    summary="Cancel one session or the rest of its course",
    tag=TAG,
    roles=DESK,
    body=CancelBody,
    response=CancelResult,
    views={"front_desk": CancelDeskResult},
    errors=ACTION_ERRORS,
)
async def cancel_appointment(ctx: Ctx) -> CancelResult:
    """`scope: rest_of_course` cancels this session, every later active session of its course
    and the course itself. Inside the clinic's cancellation notice the answer is 409 unless
    `override: true` comes with an `override_reason`, which is logged with each session."""
    body: CancelBody = ctx.body
    if body.override and body.override_reason is None:
        raise invalid("override_reason", "required when override is true")
    if body.override_reason is not None and not body.override:
        raise invalid("override", "must be true when override_reason is given")
    outcome = await _act(
        ctx,
        cancellations.cancel,
        reason=body.reason,
        scope=body.scope,
        override_reason=body.override_reason,
    )
    detail = await appointment_detail(ctx, outcome.appointment)
    return CancelResult(
        appointment=detail,
        version=detail.version,
        cancelled_appointment_ids=outcome.cancelled_ids,
        override_used=outcome.override_used,
        series_status=outcome.series_status,
    )


@API.route(
    "POST",
    "/api/v1/appointments/{appointment_id}/reschedule",
    summary="Move an appointment, keeping the course's gaps valid",
    tag=TAG,
    roles=ALL_STAFF,
    body=RescheduleBody,
    response=RescheduleResult,
    views={"front_desk": RescheduleDeskResult},
    errors=ACTION_ERRORS,
)
async def reschedule_appointment(ctx: Ctx) -> RescheduleResult:
    """The new slot must be free (409 with `alternatives` otherwise). For a course session the
    gaps to the sessions before and after are re-checked: below the hard minimum is 409 unless a
    clinician or admin sends `override_reason` (logged); past the soft maximum the answer carries
    `warnings`; beyond twice the target the later session is flagged for clinician review. When
    the move breaks later sessions' gaps the answer proposes `proposed_shifts`; `shift_later:
    true` applies them in the same transaction (all or nothing)."""
    body: RescheduleBody = ctx.body
    assert ctx.staff is not None
    request = reschedule.MoveRequest(
        starts_at=body.starts_at,
        practitioner_id=body.practitioner_id,
        reason=body.reason,
        override_reason=body.override_reason,
        shift_later=body.shift_later,
    )
    outcome = await _act(
        ctx, reschedule.reschedule, request=request, may_override=ctx.staff.role in CLINICAL
    )
    return await _reschedule_result(ctx, outcome)


async def _reschedule_result(ctx: Ctx, outcome: reschedule.RescheduleOutcome) -> RescheduleResult:
    detail = await appointment_detail(ctx, outcome.appointment)
    zone = ZoneInfo(detail.time_zone)
    return RescheduleResult(
        appointment=detail,
        version=detail.version,
        gaps=[gap_out(g) for g in outcome.gaps],
        warnings=outcome.warnings,
        review_notes=outcome.review_notes,
        overridden=outcome.overridden,
        proposed_shifts=[shift_out(s, zone) for s in outcome.proposed_shifts],
        applied_shifts=[shift_out(s, zone) for s in outcome.applied_shifts],
        shift_failure=outcome.shift_failure,
        flagged_for_review=outcome.flagged_for_review,
    )


@API.route(
    "POST",
    "/api/v1/appointments/{appointment_id}/undo-no-show",
    summary="Undo a no-show recorded by mistake",
    tag=TAG,
    roles=DESK,
    body=UndoNoShowBody,
    response=AppointmentDetail,
    views=DESK_DETAIL,
    errors=(409, 412),
)
async def undo_no_show(ctx: Ctx) -> AppointmentDetail:
    """no_show → the status it had before (booked or confirmed, from its history), or
    checked_in with `attended: true` (the patient came: complete the session next), with the
    reason in the audit log (`appointment.undo_no_show`); the no-show sweep leaves it alone from
    then on. The 2 h reminders the no-show added to the patient's later sessions are cancelled
    unless another no-show of theirs still calls for them. 409 `not-a-no-show` for any other
    status; 412 when `expected_version` is not the current one."""
    body: UndoNoShowBody = ctx.body
    change = change_of(ctx)

    async def work(conn: asyncpg.Connection) -> Any:
        return await actions.undo_no_show(
            conn,
            ctx.path["appointment_id"],
            reason=body.reason,
            expected_version=body.expected_version,
            change=change,
            attended=body.attended,
        )

    return await appointment_detail(ctx, await in_transaction(ctx.pool, work))
