"""Adverse events: opening one (from a check-in answer, an SMS, an email, a phone call or staff),
a clinician's grade and seriousness, acknowledging, resolving, and the next-session hold.

Invariants:
* every change writes the event (version + 1), one `adverse_event_history` row (who, when,
  which fields from what to what, why) and one audit row, in the caller's transaction;
* an event *holds* the patient's next session while it is not cleared and is an emergency
  (whatever its status) or is graded 3 (severe) or worse and not resolved
  (`AdverseEvent.holds_next_session`). While any event holds, the patient cannot be checked in
  (`check_in_hold`, called by the check-in action);
* when an event starts holding (opened as an emergency, graded >= 3) the patient's next booked
  session is flagged for clinician review with a reason naming the event, and the patient is
  asked to call the clinic before it (SMS and email as their consent allows; a call task when
  neither reaches them). When it stops holding (a clinician clears it, or resolves a graded
  one) that reason is taken off again; the flag goes when no other reason remains;
* a hold that has ended is the clinician's approval of the delay it caused: the course-gap
  sweep files no overdue call for it and booking the next session is not refused, nor flagged,
  for the gap since the last session (`delay_approval`).

Lock order: the event row, then the appointment rows it flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import asyncpg

from shared.domain import alerts
from shared.domain.appointment_changes import Change, clinic_of
from shared.domain.errors import Conflict, InvalidField, NotFound, Stale
from shared.domain.reach import reach_of
from shared.store import adverse_events, appointments, audit, call_tasks, patients, session_records
from shared.store.adverse_events import (
    AdverseEvent,
    NewAdverseEvent,
    Seriousness,
    Source,
    Tier,
)
from shared.store.appointments import Appointment
from shared.store.notifications import outbox
from shared.store.notifications.outbox import NewNotification
from shared.store.notifications.rows import Channel

# The patient's message when an event holds their next session (templates/<kind>.*).
CALL_BEFORE_NEXT_VISIT = "call_before_next_visit"
CALL_NOTICE_LIFETIME = timedelta(days=7)
# The call list's business days (Monday = 0 .. Friday = 4) and when a routine call is due on
# one, in the clinic's zone.
BUSINESS_DAYS = frozenset({0, 1, 2, 3, 4})
ROUTINE_CALL_AT = time(9)

# What an event opens as, before a clinician has graded it: an emergency or an urgent answer
# may be serious until someone has looked.
OPENING_SERIOUSNESS: dict[Tier, Seriousness] = {
    "routine": "not_serious",
    "urgent": "possibly_serious",
    "emergency": "possibly_serious",
}


class EventStale(Stale):
    def __init__(self, current: AdverseEvent) -> None:
        super().__init__("adverse event", current)


def hold_reason(event_id: int) -> str:
    """The review reason an event puts on the patient's next session (no clinical detail: the
    front desk reads review reasons)."""
    return f"adverse event {event_id}: a clinician must clear it before the next session"


def next_business_day(now: datetime, zone: ZoneInfo) -> datetime:
    """ROUTINE_CALL_AT on the first business day after `now`'s local date, as an aware UTC
    instant (a Friday's report is due on Monday)."""
    day: date = now.astimezone(zone).date() + timedelta(days=1)
    while day.weekday() not in BUSINESS_DAYS:
        day += timedelta(days=1)
    return datetime.combine(day, ROUTINE_CALL_AT, tzinfo=zone)


async def _audit(
    conn: asyncpg.Connection,
    change: Change,
    action: str,
    event: AdverseEvent,
    *,
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> None:
    await audit.insert(
        conn,
        at=change.now,
        actor=change.actor,
        action=f"adverse_event.{action}",
        entity="adverse_event",
        entity_id=event.id,
        patient_id=event.patient_id,
        reason=reason,
        details=details,
        request_id=change.request_id,
    )


def _plain(value: Any) -> Any:
    """A value as the history's and the audit log's JSON holds it."""
    return value.isoformat() if isinstance(value, datetime) else value


def _diff(before: AdverseEvent, values: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"field": name, "from": _plain(getattr(before, name)), "to": _plain(value)}
        for name, value in sorted(values.items())
        if getattr(before, name) != value
    ]


async def _change(
    conn: asyncpg.Connection,
    before: AdverseEvent,
    values: dict[str, Any],
    *,
    action: str,
    reason: str,
    change: Change,
    details: dict[str, Any] | None = None,
) -> AdverseEvent:
    """Write `values`, its history row and its audit row; then start or end the hold if the
    change made the event start or stop holding the next session."""
    diff = _diff(before, values)
    updated = await adverse_events.update(conn, before.id, values, now=change.now)
    await adverse_events.append_history(
        conn, before.id, at=change.now, actor=change.actor.label, action=action,
        changes=diff, reason=reason,
    )  # fmt: skip
    await _audit(
        conn, change, action, updated, reason=reason, details={"changes": diff, **(details or {})}
    )
    if updated.holds_next_session and not before.holds_next_session:
        updated = await _start_hold(conn, updated, change)
    elif before.holds_next_session and not updated.holds_next_session:
        await _end_hold(conn, updated, change)
    return updated


async def report(
    conn: asyncpg.Connection,
    *,
    clinic_id: int,
    patient_id: int,
    appointment_id: int | None,
    tier: Literal["routine", "urgent", "emergency"],
    symptoms: str,
    source: str,
    change: Change,
    check_in_id: int | None = None,
    inbound_message_id: int | None = None,
    lot_number: str | None = None,
    inbox_item_id: int | None = None,
) -> AdverseEvent:
    """Open an adverse event with its first history entry and audit row, in the caller's
    transaction.

    Routine: a call task for the next business day in the clinic's zone. Emergency: the event
    holds the patient's next session at once (see the module docstring); urgent and routine
    events hold it once a clinician grades them 3 or above.
    Urgent and emergency events alert staff here, in the same transaction
    (`shared.domain.alerts.raise_alert`: the priority lane, escalated until acknowledged).
    The lot is the session record's when the caller does not name one."""
    if source not in adverse_events.SOURCES:
        raise InvalidField("source", f"must be one of {', '.join(adverse_events.SOURCES)}")
    if tier not in adverse_events.TIERS:
        raise InvalidField("tier", f"must be one of {', '.join(adverse_events.TIERS)}")
    symptoms = symptoms.strip()
    if not symptoms:
        raise InvalidField("symptoms", "must say what the patient reported")
    patient = await patients.get(conn, patient_id)
    if patient is None or patient.clinic_id != clinic_id:
        raise InvalidField("patient_id", f"no patient {patient_id} at clinic {clinic_id}")
    if appointment_id is not None:
        session = await appointments.get(conn, appointment_id)
        if session is None or session.patient_id != patient_id:
            raise InvalidField("appointment_id", f"no session {appointment_id} of this patient")
    checked_source: Source = source  # checked above
    if lot_number is None and appointment_id is not None:
        record = await session_records.for_appointment(conn, appointment_id)
        lot_number = None if record is None else record.fields.lot_number
    event = await adverse_events.insert(
        conn,
        NewAdverseEvent(
            clinic_id=clinic_id,
            patient_id=patient_id,
            appointment_id=appointment_id,
            symptoms=symptoms,
            source=checked_source,
            tier=tier,
            seriousness=OPENING_SERIOUSNESS[tier],
            check_in_id=check_in_id,
            inbound_message_id=inbound_message_id,
            lot_number=lot_number or None,
        ),
        actor=change.actor.label,
        now=change.now,
    )
    opened = {
        name: getattr(event, name)
        for name in ("tier", "source", "seriousness", "status", "appointment_id", "lot_number")
    }
    await adverse_events.append_history(
        conn,
        event.id,
        at=change.now,
        actor=change.actor.label,
        action="open",
        changes=[{"field": k, "from": None, "to": v} for k, v in opened.items()],
        reason=f"reported by {source}",
    )
    details: dict[str, Any] = {
        "tier": tier,
        "source": source,
        "appointment_id": appointment_id,
        "check_in_id": check_in_id,
        "inbound_message_id": inbound_message_id,
    }
    if tier == "routine":
        clinic = await clinic_of(conn, clinic_id)
        due = next_business_day(change.now, clinic.zone)
        details["call_task_id"] = await call_tasks.file_for_event(
            conn,
            clinic_id=clinic_id,
            patient_id=patient_id,
            appointment_id=appointment_id,
            adverse_event_id=event.id,
            reason="adverse_event_routine",
            detail=f"Routine follow-up of adverse event {event.id}: call the patient on "
            f"{due.astimezone(clinic.zone).date().isoformat()} (the next business day).",
            due_at=due,
            now=change.now,
        )
    if tier != "routine":
        alert = await alerts.raise_alert(
            conn,
            clinic_id=clinic_id,
            tier=tier,
            patient_id=patient_id,
            now=change.now,
            adverse_event_id=event.id,
            inbox_item_id=inbox_item_id,
            summary=f"Adverse event #{event.id} ({tier}) reported by {source}",
        )
        details["staff_alert_id"] = alert.id
    await _audit(conn, change, "open", event, reason=f"reported by {source}", details=details)
    if event.holds_next_session:
        event = await _start_hold(conn, event, change)
    return event


async def _locked(conn: asyncpg.Connection, event_id: int, expected_version: int) -> AdverseEvent:
    current = await adverse_events.lock(conn, event_id)
    if current is None:
        raise NotFound("adverse event", event_id)
    if current.version != expected_version:
        raise EventStale(current)
    return current


async def acknowledge(
    conn: asyncpg.Connection,
    event_id: int,
    *,
    note: str,
    expected_version: int,
    change: Change,
) -> AdverseEvent:
    """open → acknowledged: someone has seen it and is on it."""
    current = await _locked(conn, event_id, expected_version)
    if current.status != "open":
        raise Conflict(f"the adverse event is {current.status}", code="not-open")
    values = {
        "status": "acknowledged",
        "acknowledged_at": change.now,
        "acknowledged_by": change.actor.label,
    }
    return await _change(conn, current, values, action="acknowledge", reason=note, change=change)


async def assess(
    conn: asyncpg.Connection,
    event_id: int,
    *,
    grade: int | None,
    seriousness: Seriousness | None,
    reason: str,
    expected_version: int,
    change: Change,
) -> AdverseEvent:
    """A clinician sets or corrects the grade and/or the seriousness. Graded 3 or above (and
    not cleared), the event holds the next session; corrected below 3, a non-emergency event
    stops holding it."""
    current = await _locked(conn, event_id, expected_version)
    if grade is None and seriousness is None:
        raise InvalidField("grade", "give a grade, a seriousness or both")
    if grade is not None and not 1 <= grade <= 5:
        raise InvalidField("grade", "must be 1 (mild) to 5 (death)")
    values: dict[str, Any] = {}
    if grade is not None:
        values["grade"] = grade
    if seriousness is not None:
        values["seriousness"] = seriousness
    if not _diff(current, values):
        raise Conflict("the event already has this grade and seriousness", code="no-change")
    return await _change(conn, current, values, action="assess", reason=reason, change=change)


async def resolve(
    conn: asyncpg.Connection,
    event_id: int,
    *,
    notes: str,
    expected_version: int,
    change: Change,
) -> AdverseEvent:
    """→ resolved, with the clinician's notes. An emergency still holds the next session until
    it is cleared (`clear`); a graded one stops holding it."""
    current = await _locked(conn, event_id, expected_version)
    if current.status == "resolved":
        raise Conflict("the adverse event is already resolved", code="already-resolved")
    values = {
        "status": "resolved",
        "resolved_at": change.now,
        "resolved_by": change.actor.label,
        "resolution_notes": notes,
    }
    return await _change(conn, current, values, action="resolve", reason=notes, change=change)


async def clear(
    conn: asyncpg.Connection,
    event_id: int,
    *,
    reason: str,
    expected_version: int,
    change: Change,
) -> AdverseEvent:
    """A clinician clears the patient's next session to go ahead despite this event, with the
    reason; the hold ends (its review reason leaves the flagged session)."""
    current = await _locked(conn, event_id, expected_version)
    if current.cleared_at is not None:
        raise Conflict("the event was already cleared for the next session", code="already-cleared")
    if not current.holds_next_session:
        raise Conflict(
            "this event does not hold the next session (not an emergency, not graded 3 or "
            "above while unresolved): there is nothing to clear",
            code="nothing-to-clear",
        )
    values = {
        "cleared_at": change.now,
        "cleared_by": change.actor.label,
        "clearance_reason": reason,
    }
    return await _change(conn, current, values, action="clear", reason=reason, change=change)


# -- the hold --------------------------------------------------------------------------------------


async def _start_hold(
    conn: asyncpg.Connection, event: AdverseEvent, change: Change
) -> AdverseEvent:
    """Flag the patient's next booked session and ask the patient to call; record when."""
    upcoming = await appointments.upcoming_for_patient(conn, event.patient_id, change.now)
    flagged: Appointment | None = None
    if upcoming:
        nxt = await appointments.lock(conn, upcoming[0].id)
        assert nxt is not None
        reason = hold_reason(event.id)
        if reason not in nxt.review_reasons:
            flagged = await appointments.set_review(
                conn,
                nxt.id,
                needs_review=True,
                reasons=[*nxt.review_reasons, reason],
                actor=change.actor.label,
                now=change.now,
                note=reason,
            )
    told = await _tell_patient(conn, event, change)
    values: dict[str, Any] = {}
    if event.hold_started_at is None:
        values["hold_started_at"] = change.now
    updated = (
        await adverse_events.update(conn, event.id, values, now=change.now) if values else event
    )
    hold = {
        "flagged_appointment_id": None if flagged is None else flagged.id,
        "notification_ids": told.notification_ids,
        "call_task_id": told.call_task_id,
    }
    await adverse_events.append_history(
        conn,
        event.id,
        at=change.now,
        actor=change.actor.label,
        action="hold",
        changes=[{"field": "hold_started_at", "from": None, "to": _plain(change.now)}]
        if values
        else [],
        reason="holds the next session until a clinician clears it",
    )
    await _audit(conn, change, "hold", updated, details=hold)
    return updated


@dataclass(frozen=True)
class _Told:
    notification_ids: list[int]
    call_task_id: int | None


async def _tell_patient(conn: asyncpg.Connection, event: AdverseEvent, change: Change) -> _Told:
    """'Please call the clinic before your next appointment': SMS and email as the patient's
    consent allows; a call task when neither reaches them (never silently dropped)."""
    reach = await reach_of(conn, event.patient_id)
    channels: list[Channel] = []
    if reach is not None and reach.sms:
        channels.append("sms")
    if reach is not None and reach.care_email:
        channels.append("email")
    ids: list[int] = []
    for channel in channels:
        assert reach is not None
        written = await outbox.insert(
            conn,
            NewNotification(
                clinic_id=event.clinic_id,
                kind=CALL_BEFORE_NEXT_VISIT,
                channel=channel,
                template=CALL_BEFORE_NEXT_VISIT,
                due_at=change.now,
                dedupe_key=f"{CALL_BEFORE_NEXT_VISIT}:{channel}:event{event.id}",
                patient_id=event.patient_id,
                context={"adverse_event_id": event.id},
                expires_at=change.now + CALL_NOTICE_LIFETIME,
                language=reach.patient.language,
            ),
            now=change.now,
        )
        if written is not None:
            ids.append(written)
    task = None
    if not channels and reach is not None:
        task = await call_tasks.file_for_event(
            conn,
            clinic_id=event.clinic_id,
            patient_id=event.patient_id,
            appointment_id=event.appointment_id,
            adverse_event_id=event.id,
            reason="adverse_event_hold",
            detail=f"Adverse event {event.id} holds the patient's next session and no message "
            "can reach them: phone them to call the clinic before that session.",
            due_at=change.now,
            now=change.now,
        )
    return _Told(ids, task)


async def _end_hold(conn: asyncpg.Connection, event: AdverseEvent, change: Change) -> None:
    """Take the event's review reason off the patient's sessions; the flag goes with it when
    no other reason remains."""
    reason = hold_reason(event.id)
    released = []
    for session in await appointments.upcoming_for_patient(
        conn, event.patient_id, change.now - timedelta(days=1)
    ):
        if reason not in session.review_reasons:
            continue
        locked = await appointments.lock(conn, session.id)
        assert locked is not None
        remaining = [r for r in locked.review_reasons if r != reason]
        await appointments.set_review(
            conn,
            locked.id,
            needs_review=bool(remaining) and locked.needs_review,
            reasons=remaining,
            actor=change.actor.label,
            now=change.now,
            note=f"adverse event {event.id} no longer holds the next session",
        )
        released.append(locked.id)
    await _audit(conn, change, "hold_end", event, details={"released_appointment_ids": released})


async def holding(conn: asyncpg.Connection | asyncpg.Pool, patient_id: int) -> list[AdverseEvent]:
    return await adverse_events.holding_for_patient(conn, patient_id)


async def check_in_hold(conn: asyncpg.Connection, appointment: Appointment) -> None:
    """The next-session guard: refuse the check-in while an event of the patient holds it."""
    if appointment.patient_id is None:
        return
    held = await adverse_events.holding_for_patient(conn, appointment.patient_id)
    if not held:
        return
    first = held[0]
    named = ", ".join(str(e.id) for e in held)
    raise Conflict(
        f"adverse event {named} (reported {first.created_at.date().isoformat()}) holds the "
        "patient's next session: a clinician must clear it before check-in",
        code="adverse-event-hold",
        adverse_event_ids=[e.id for e in held],
    )


async def delay_approval(
    conn: asyncpg.Connection | asyncpg.Pool, patient_id: int, since: datetime
) -> str | None:
    """Why a gap since `since` (the course's last session) was approved by a clinician: a hold
    that started after it and has ended (cleared, or a graded event resolved). None without."""
    event = await adverse_events.clearance_since(conn, patient_id, since)
    if event is None:
        return None
    by = event.cleared_by or event.resolved_by or "a clinician"
    why = event.clearance_reason or event.resolution_notes or ""
    return f"the delay was approved by {by} clearing adverse event {event.id}: {why}"
