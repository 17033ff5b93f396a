"""Planning the patient's messages where they are caused: a booking, a cancellation, a move.

Each function writes notification rows (shared/store/notifications/outbox.py) inside the
caller's transaction, so a booking and its confirmation, or a cancellation and the end of its
reminders, commit together or not at all. They decide *whether*, *when* and *on which channel*
a message goes; the words are rendered at send time from current data (shared/messaging), and
the notifier re-checks consent and the appointment before sending.

Channels:
* transactional messages about something the patient booked (the booking confirmation, and the
  cancellation and reschedule notices that amend it) go by email whenever there is an address (it
  carries the .ics), and also by SMS with care SMS consent;
* reminders are care messages and go on one channel: SMS with care SMS consent, else email with
  care email consent, else not at all;
* SMS always needs a mobile and no opt-out; an erased patient gets nothing.

Dedupe keys (the same cause never yields two rows): appointment messages use
`{kind}:{channel}:appt{id}:v{version}`, so a move (which bumps the version) plans fresh rows;
a booking confirmation covering several sessions uses `booking:{channel}:{first id}`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from shared.domain import check_ins
from shared.domain.reach import Reach, reach_from, reach_of
from shared.store import appointments, notifications, patients
from shared.store import consents as consent_store
from shared.store.appointments import Appointment
from shared.store.consents import Consent, ConsentKind
from shared.store.notifications.outbox import NewNotification
from shared.store.notifications.rows import Channel
from shared.store.patients import Patient

__all__ = ["Reach", "reach_from", "reach_of"]  # re-exported: callers name them as outbox_plan's

BOOKING_CONFIRMATION = "booking_confirmation"
REMINDER_72H = "reminder_72h"
REMINDER_24H = "reminder_24h"
REMINDER_2H = "reminder_2h"
CANCELLATION_NOTICE = "cancellation_notice"
RESCHEDULE_NOTICE = "reschedule_notice"
NEW_LINK = "new_link"
CONTACT_CHANGED = "contact_changed"
MAINTENANCE_REMINDER = "maintenance_reminder"
SESSION_PROPOSAL = "session_proposal"
PROPOSAL_RELEASED = "proposal_released"
# The message saying that an unanswered proposal was let go is pointless days later.
RELEASE_NOTICE_LIFETIME = timedelta(days=3)
# A maintenance reminder still makes sense a while after its day (the notifier was down, quiet
# hours, the daily cap), not months later.
MAINTENANCE_LIFETIME = timedelta(days=30)

# How long before the start each reminder is due. The 72 h one carries the confirmation request.
REMINDER_LEADS: dict[str, timedelta] = {
    REMINDER_72H: timedelta(hours=72),
    REMINDER_24H: timedelta(hours=24),
    REMINDER_2H: timedelta(hours=2),
}
# Only for patients who have missed an appointment before (off by default in the protocol).
NO_SHOW_ONLY = frozenset({REMINDER_2H})

# Emails the patient gets because of their own booking, whatever their care email consent.
TRANSACTIONAL_KINDS = frozenset({BOOKING_CONFIRMATION, CANCELLATION_NOTICE, RESCHEDULE_NOTICE})
# Messages about the patient's access (a new private link, a contact changed): like the above,
# emails go whatever the care email consent; they concern no appointment.
ACCOUNT_KINDS = frozenset({NEW_LINK, CONTACT_CHANGED})
ACCOUNT_MESSAGE_LIFETIME = timedelta(days=1)
# Appointment states in which a reminder still makes sense.
REMINDABLE = frozenset({"booked", "confirmed"})


def needs_consent(kind: str, channel: Channel) -> ConsentKind | None:
    """The consent a message needs at send time, None for transactional email (the send-time
    check in the notifier should use this, so planning and sending agree)."""
    if channel == "sms":
        return "care_sms"
    return None if kind in TRANSACTIONAL_KINDS | ACCOUNT_KINDS else "care_email"


def iso(moment: datetime) -> str:
    return moment.isoformat()


def stale_reason(
    kind: str,
    planned_version: int | None,
    context: dict[str, Any],
    appointment: Appointment | None,
) -> str | None:
    """Why a planned message no longer fits its appointment, None while it does: the notifier's
    send-time check, kept beside the planning so that the two agree.

    A version that moved on is not enough to drop a message: confirming, or a review flag, bumps
    the version too. What makes a message stale is the appointment being off, or its start no
    longer being the one the message was planned for (`context["starts_at"]`).
    """
    if appointment is None:
        return None
    if kind == CANCELLATION_NOTICE:
        if appointment.status == "cancelled":
            return None
        return f"appointment is {appointment.status}, not cancelled"
    if kind == SESSION_PROPOSAL:
        # The question is worth sending only while its time is still held for the patient.
        if appointment.status == "held":
            return None
        return f"the proposed time is no longer held (appointment is {appointment.status})"
    if appointment.status not in REMINDABLE:
        return f"appointment is {appointment.status}"
    if planned_version == appointment.version:
        return None
    planned = context.get("starts_at")
    if planned is None or datetime.fromisoformat(planned) != appointment.starts_at:
        return "appointment moved since this message was planned"
    return None


async def _enqueue(
    conn: asyncpg.Connection,
    reach: Reach,
    *,
    clinic_id: int,
    kind: str,
    channel: Channel,
    dedupe_key: str,
    due_at: datetime,
    expires_at: datetime | None,
    appointment: Appointment,
    context: dict[str, Any],
    now: datetime,
    urgent: bool = False,
) -> int | None:
    return await notifications.outbox.insert(
        conn,
        NewNotification(
            clinic_id=clinic_id,
            kind=kind,
            channel=channel,
            template=kind,
            due_at=due_at,
            dedupe_key=dedupe_key,
            patient_id=reach.patient.id,
            appointment_id=appointment.id,
            appointment_version=appointment.version,
            # The start it was planned for, so the send-time check (stale_reason) can tell a
            # move apart from a change that leaves the time alone (confirming bumps the version).
            context={"starts_at": iso(appointment.starts_at), **context},
            expires_at=expires_at,
            urgent=urgent,
            language=reach.patient.language,
        ),
        now=now,
    )


def _appointment_key(kind: str, channel: Channel, appointment: Appointment) -> str:
    return f"{kind}:{channel}:appt{appointment.id}:v{appointment.version}"


async def _load(conn: asyncpg.Connection, appointment_ids: Sequence[int]) -> list[Appointment]:
    """The appointments in start order (unknown ids are skipped)."""
    found = await appointments.get_many(conn, appointment_ids)
    return sorted(found.values(), key=lambda a: (a.starts_at, a.id))


# -- booking -----------------------------------------------------------------------------------


async def plan_booking(
    conn: asyncpg.Connection,
    *,
    appointment_ids: Sequence[int],
    patient_id: int,
    clinic_id: int,
    now: datetime,
) -> list[int]:
    """The booking confirmation (one row per channel covering every session) and each session's
    reminders; returns the ids of the rows written."""
    reach = await reach_of(conn, patient_id)
    booked = await _load(conn, appointment_ids)
    if reach is None or not booked:
        return []
    first, last = booked[0], booked[-1]
    # Booked from the public form (or the patient's private page), the confirmation answers the
    # patient's own action this very moment, like a reply to their message: exempt from quiet
    # hours and the daily cap.
    urgent = first.source in ("public", "self_service")
    written: list[int | None] = []
    for channel in reach.transactional_channels():
        written.append(
            await _enqueue(
                conn,
                reach,
                clinic_id=clinic_id,
                kind=BOOKING_CONFIRMATION,
                channel=channel,
                dedupe_key=f"booking:{channel}:{first.id}",
                due_at=now,
                # Worth sending while any session is still ahead.
                expires_at=last.starts_at,
                appointment=first,
                context={"appointment_ids": [a.id for a in booked]},
                now=now,
                urgent=urgent,
            )
        )
    ids = [i for i in written if i is not None]
    # A no-show before the first session is before every one of them: ask once.
    missed = await appointments.has_earlier_no_show(conn, patient_id, first.starts_at)
    for appointment in booked:
        ids += await _plan_reminders(conn, reach, appointment, now=now, kinds=None, missed=missed)
    return ids


# -- reminders ---------------------------------------------------------------------------------


async def plan_reminders(
    conn: asyncpg.Connection,
    appointment: Appointment,
    *,
    now: datetime,
    kinds: frozenset[str] | None = None,
) -> list[int]:
    """The reminders of one appointment at its current time and version (all kinds, or only
    `kinds`); returns the ids of the rows written. Safe to call again: a kind already planned
    for this start is left alone, whatever channel it took."""
    if appointment.patient_id is None:
        return []
    reach = await reach_of(conn, appointment.patient_id)
    if reach is None:
        return []
    return await _plan_reminders(conn, reach, appointment, now=now, kinds=kinds)


async def _plan_reminders(
    conn: asyncpg.Connection,
    reach: Reach,
    appointment: Appointment,
    *,
    now: datetime,
    kinds: frozenset[str] | None,
    missed: bool | None = None,
    replan: bool = False,
    carried: frozenset[str] = frozenset(),
) -> list[int]:
    """`missed`: whether the patient has a no-show before this appointment (None: look it up).
    `replan`: a kind may have been planned and cancelled before at this version (the patient's
    consents changed back and forth): it then gets the next free key of its cause
    (`...:v3:r1`, `...:v3:r2`), since the first one is spent. `carried`: kinds whose row on
    another channel was still waiting and has just been cancelled: they keep their due time even
    if it has passed (the patient was about to get that reminder, and still does)."""
    channel = reach.reminder_channel()
    if channel is None or appointment.status not in REMINDABLE:
        return []  # nothing the patient allows us to send, or nothing to remind of
    wanted = [k for k in REMINDER_LEADS if kinds is None or k in kinds]
    if any(k in NO_SHOW_ONLY for k in wanted):
        if missed is None:
            missed = await appointments.has_earlier_no_show(
                conn, reach.patient.id, appointment.starts_at
            )
        if not missed:
            wanted = [k for k in wanted if k not in NO_SHOW_ONLY]
    planned = await notifications.outbox.planned_kinds(
        conn, appointment.id, starts_at=appointment.starts_at
    )
    used = (
        await notifications.outbox.dedupe_keys_for_appointment(conn, appointment.id)
        if replan
        else set()
    )
    ids = []
    for kind in wanted:
        due_at = appointment.starts_at - REMINDER_LEADS[kind]
        # A reminder whose moment has passed is skipped, not sent late: a "3 days before"
        # message 10 hours before would be wrong, and the later reminders still come.
        if (due_at < now and kind not in carried) or kind in planned:
            continue
        key = _appointment_key(kind, channel, appointment)
        key = next(
            candidate
            for candidate in (key, *(f"{key}:r{n}" for n in range(1, len(used) + 2)))
            if candidate not in used
        )
        written = await _enqueue(
            conn,
            reach,
            clinic_id=appointment.clinic_id,
            kind=kind,
            channel=channel,
            dedupe_key=key,
            due_at=due_at,
            expires_at=appointment.starts_at,
            appointment=appointment,
            context={},
            now=now,
        )
        if written is not None:
            ids.append(written)
    return ids


async def on_no_show(conn: asyncpg.Connection, patient_id: int, *, now: datetime) -> list[int]:
    """A patient just missed an appointment: their later appointments get the 2 h reminder too.
    Call in the transaction that records the no-show."""
    ids = []
    for appointment in await appointments.upcoming_for_patient(conn, patient_id, now):
        ids += await plan_reminders(conn, appointment, now=now, kinds=NO_SHOW_ONLY)
    return ids


# -- consent changes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Replanned:
    """What a change in how the patient may be reached did to their reminders."""

    channel: Channel | None  # where reminders go from now on (None: nowhere)
    cancelled: list[int]  # scheduled reminders cancelled (on the channel no longer allowed)
    planned: list[int]  # reminders planned on `channel`

    def summary(self) -> dict[str, Any]:
        """For the audit row of the change (ids only, no patient data)."""
        return {"channel": self.channel, "cancelled": self.cancelled, "planned": self.planned}


async def on_consents_changed(
    conn: asyncpg.Connection, patient_id: int, *, now: datetime
) -> Replanned:
    """The patient's care consents (or SMS opt-out, mobile, email) just changed: move the
    reminders already planned to the channel now allowed. Call in the transaction that records
    the change, after recording it; lock the patient (patients.lock) before recording it, so
    that two changes at once queue rather than deadlock on the lock taken here.

    * scheduled reminders on a channel that is no longer the reminder channel are cancelled,
      with a reason naming the change (rows a worker has claimed are left to its send-time
      check, which reads the consents again);
    * every upcoming session gets the reminders it lacks on the reminder channel, by the same
      planning as a booking (same due times; a kind already planned and not cancelled is never
      planned twice), so calling this again, or after toggling back and forth, leaves one live
      row per reminder. A reminder whose moment has passed is planned only to replace one that
      was still waiting on the other channel (the patient was about to get it, late or held by
      quiet hours); one never planned is skipped, as at booking;
    * transactional messages (TRANSACTIONAL_KINDS, ACCOUNT_KINDS) are left alone: their email
      needs no care consent, and their SMS is checked against care SMS consent when it is sent.

    Reminders go on one channel (SMS first): granting care email to a patient who is texted
    changes nothing, and granting care SMS moves email reminders to SMS. With neither allowed,
    the reminders are cancelled and none planned; the reasons say so.
    """
    # One re-plan per patient at a time: of two changes made at once, the one re-planning last
    # must see the other's (it waits here, then reads what the other committed), or the
    # reminders end on a channel the final consents do not allow, or on none.
    if await patients.lock(conn, patient_id) is None:
        return Replanned(None, [], [])
    reach = await reach_of(conn, patient_id)
    if reach is None:
        return Replanned(None, [], [])  # erased: the erasure cancelled everything
    consents = await consent_store.current(conn, patient_id)
    channel = reach.reminder_channel()
    outcome = f"reminders now go by {channel}" if channel else "no channel left for reminders"
    cancelled: list[notifications.outbox.CancelledRow] = []
    channels: tuple[Channel, ...] = ("sms", "email")
    for dropped in (c for c in channels if c != channel):
        reason = f"consent change: {_why_not(dropped, reach, consents)}; {outcome}"
        cancelled += await notifications.outbox.cancel_scheduled_for_patient(
            conn, patient_id, kinds=REMINDER_LEADS, channel=dropped, reason=reason, now=now
        )
    planned: list[int] = []
    upcoming = await appointments.upcoming_for_patient(conn, patient_id, now)
    if channel is not None and upcoming:
        # Every no-show is in the past, so before each upcoming session alike.
        missed = await appointments.has_earlier_no_show(conn, patient_id, upcoming[0].starts_at)
        for appointment in upcoming:
            carried = frozenset(r.kind for r in cancelled if r.appointment_id == appointment.id)
            planned += await _plan_reminders(
                conn,
                reach,
                appointment,
                now=now,
                kinds=None,
                missed=missed,
                replan=True,
                carried=carried,
            )
    # Check-ins still to be asked move too (an SMS opt-out does not end safety follow-up: it
    # moves to email, or to a staff call).
    await check_ins.rechannel_for_patient(conn, patient_id, now=now)
    return Replanned(channel, sorted(r.id for r in cancelled), planned)


def _why_not(channel: Channel, reach: Reach, consents: Mapping[ConsentKind, Consent]) -> str:
    """Why reminders no longer go on `channel` (it is not the reminder channel now)."""

    def granted(kind: ConsentKind) -> bool:
        return kind in consents and consents[kind].granted

    if channel == "sms":
        if not granted("care_sms"):
            return "care SMS consent withdrawn"
        if reach.patient.sms_opted_out_at is not None:
            return "patient opted out of SMS"
        return "no mobile on file"
    if reach.sms:
        return "texts allowed (care SMS consent), which reminders use first"
    if not granted("care_email"):
        return "care email consent withdrawn"
    return "no email on file"


# -- the end of a course ------------------------------------------------------------------------


def maintenance_due(last_start: datetime, interval_days: int, zone: ZoneInfo) -> datetime:
    """`interval_days` local calendar days after the last session, at its local wall time (a
    time the clinic was open, so inside the usual quiet-hours window; the notifier still waits
    for the window if it is not)."""
    local = last_start.astimezone(zone)
    day = local.date() + timedelta(days=interval_days)
    return datetime.combine(day, local.timetz().replace(tzinfo=None), tzinfo=zone).astimezone(UTC)


async def plan_maintenance_reminder(
    conn: asyncpg.Connection,
    *,
    series_id: int,
    last_session: Appointment,
    interval_days: int,
    zone: ZoneInfo,
    now: datetime,
) -> list[int]:
    """The maintenance reminder of a completed course, `interval_days` after its last session:
    a care message on one channel, like the reminders (SMS with care SMS consent, else email
    with care email consent, else none). Keyed on the course, so it is planned once whatever
    calls this again. Call in the transaction that completes the course."""
    if last_session.patient_id is None:
        return []
    reach = await reach_of(conn, last_session.patient_id)
    if reach is None:
        return []
    channel = reach.reminder_channel()
    if channel is None:
        return []
    due_at = max(maintenance_due(last_session.starts_at, interval_days, zone), now)
    written = await notifications.outbox.insert(
        conn,
        NewNotification(
            clinic_id=last_session.clinic_id,
            kind=MAINTENANCE_REMINDER,
            channel=channel,
            template=MAINTENANCE_REMINDER,
            due_at=due_at,
            # One per course, whatever the channel: planned once even if consent changes between
            # two calls.
            dedupe_key=f"{MAINTENANCE_REMINDER}:series{series_id}",
            patient_id=reach.patient.id,
            # The session it follows, for the record; the message does not talk about it.
            appointment_id=last_session.id,
            appointment_version=last_session.version,
            context={"series_id": series_id, "interval_days": interval_days},
            expires_at=due_at + MAINTENANCE_LIFETIME,
            language=reach.patient.language,
        ),
        now=now,
    )
    return [] if written is None else [written]


# -- next-session proposals ----------------------------------------------------------------------


async def plan_proposal(
    conn: asyncpg.Connection, held: Appointment, *, answer_by: datetime, now: datetime
) -> list[int]:
    """Ask the patient about the next session held for them ("Reply C to accept, R for other
    times"): by SMS (the answer comes by SMS, so the caller holds nothing without it) and by
    email with care email consent. Scheduled messages (quiet hours and the daily cap apply),
    pointless once the proposal is released at `answer_by`."""
    if held.patient_id is None:
        return []
    reach = await reach_of(conn, held.patient_id)
    if reach is None or not reach.sms:
        return []
    channels: list[Channel] = ["sms", "email"] if reach.care_email else ["sms"]
    ids = []
    for channel in channels:
        written = await _enqueue(
            conn,
            reach,
            clinic_id=held.clinic_id,
            kind=SESSION_PROPOSAL,
            channel=channel,
            dedupe_key=f"{SESSION_PROPOSAL}:{channel}:appt{held.id}",
            due_at=now,
            expires_at=answer_by,
            appointment=held,
            context={"answer_by": iso(answer_by)},
            now=now,
        )
        if written is not None:
            ids.append(written)
    return ids


async def plan_accepted_proposal(
    conn: asyncpg.Connection, booked: Appointment, *, now: datetime
) -> list[int]:
    """The patient took a proposed session by SMS: the booking confirmation by email (it
    carries the .ics; the SMS answer already said it is booked, so no second text) and the
    session's reminders."""
    if booked.patient_id is None:
        return []
    reach = await reach_of(conn, booked.patient_id)
    if reach is None:
        return []
    ids: list[int] = []
    if reach.has_email:
        written = await _enqueue(
            conn,
            reach,
            clinic_id=booked.clinic_id,
            kind=BOOKING_CONFIRMATION,
            channel="email",
            dedupe_key=f"booking:email:{booked.id}",
            due_at=now,
            expires_at=booked.starts_at,
            appointment=booked,
            context={"appointment_ids": [booked.id]},
            now=now,
            # It answers the patient's own reply this very moment, like the public form's.
            urgent=True,
        )
        if written is not None:
            ids.append(written)
    return ids + await _plan_reminders(conn, reach, booked, now=now, kinds=None)


async def plan_proposal_released(
    conn: asyncpg.Connection, released: Appointment, *, now: datetime
) -> list[int]:
    """Tell the patient that the time proposed to them was let go unanswered and how to book
    (the clinic will call): one channel, like a reminder."""
    if released.patient_id is None:
        return []
    reach = await reach_of(conn, released.patient_id)
    channel = None if reach is None else reach.reminder_channel()
    if reach is None or channel is None:
        return []
    written = await _enqueue(
        conn,
        reach,
        clinic_id=released.clinic_id,
        kind=PROPOSAL_RELEASED,
        channel=channel,
        dedupe_key=f"{PROPOSAL_RELEASED}:{channel}:appt{released.id}",
        due_at=now,
        expires_at=now + RELEASE_NOTICE_LIFETIME,
        appointment=released,
        context={},
        now=now,
    )
    return [] if written is None else [written]


# -- cancellations and moves -------------------------------------------------------------------


async def on_cancelled_together(
    conn: asyncpg.Connection,
    appointment_ids: Sequence[int],
    *,
    now: datetime,
    notify_patient: bool,
) -> list[int]:
    """Several sessions cancelled at once (the rest of a course): their pending messages end,
    and one notice (per channel) names them all rather than one message per session."""
    cancelled = await _load(conn, appointment_ids)
    for appointment in cancelled:
        await notifications.outbox.cancel_pending_for_appointment(
            conn, appointment.id, reason="appointment cancelled", now=now
        )
    ahead = [a for a in cancelled if a.starts_at > now and a.patient_id is not None]
    if not notify_patient or not ahead:
        return []
    return await _notice(conn, CANCELLATION_NOTICE, ahead, now=now, context={})


async def on_moved_together(
    conn: asyncpg.Connection, appointment_ids: Sequence[int], *, now: datetime
) -> list[int]:
    """Several sessions moved at once (a reschedule that shifts later sessions): each is
    re-planned, and one notice (per channel) names them all."""
    moved = await _load(conn, appointment_ids)
    ids: list[int] = []
    previous: dict[int, datetime] = {}
    for appointment in moved:
        await notifications.outbox.cancel_pending_for_appointment(
            conn,
            appointment.id,
            reason=f"appointment moved (now version {appointment.version})",
            now=now,
        )
        ids += await plan_reminders(conn, appointment, now=now)
        before = await appointments.previous_start(conn, appointment.id)
        if before is not None:
            previous[appointment.id] = before
    # Only a new time is news to the patient (the messages never name the practitioner).
    told = [
        a
        for a in moved
        if a.starts_at > now and a.status in REMINDABLE and previous.get(a.id) != a.starts_at
    ]
    if told and told[0].patient_id is not None:
        context: dict[str, Any] = {
            "previous_starts_by_id": {
                str(a.id): iso(previous[a.id]) for a in told if a.id in previous
            }
        }
        # The notice's own session (the first) and where it was: what the templates show.
        if told[0].id in previous:
            context["previous_starts_at"] = iso(previous[told[0].id])
        ids += await _notice(conn, RESCHEDULE_NOTICE, told, now=now, context=context)
    return ids


async def _notice(
    conn: asyncpg.Connection,
    kind: str,
    covered: Sequence[Appointment],
    *,
    now: datetime,
    context: dict[str, Any],
) -> list[int]:
    """One transactional notice per channel about `covered` (start order, one patient), keyed
    on the first session's new version so every change gets its own notice."""
    first = covered[0]
    assert first.patient_id is not None
    reach = await reach_of(conn, first.patient_id)
    if reach is None:
        return []
    ids = []
    for channel in reach.transactional_channels():
        written = await _enqueue(
            conn,
            reach,
            clinic_id=first.clinic_id,
            kind=kind,
            channel=channel,
            dedupe_key=_appointment_key(kind, channel, first),
            due_at=now,
            # Pointless once the (first) session has started.
            expires_at=first.starts_at,
            appointment=first,
            context={"appointment_ids": [a.id for a in covered], **context},
            now=now,
        )
        if written is not None:
            ids.append(written)
    return ids


# -- private links and contact changes ---------------------------------------------------------


async def _enqueue_account(
    conn: asyncpg.Connection,
    reach: Reach,
    *,
    kind: str,
    channel: Channel,
    dedupe_key: str,
    now: datetime,
    recipient: str | None = None,
    context: dict[str, Any] | None = None,
) -> int | None:
    # About the patient's access, not an appointment: answers what someone just did, so it is
    # exempt from quiet hours and the daily cap, and useless a day later.
    return await notifications.outbox.insert(
        conn,
        NewNotification(
            clinic_id=reach.patient.clinic_id,
            kind=kind,
            channel=channel,
            template=kind,
            due_at=now,
            dedupe_key=dedupe_key,
            patient_id=reach.patient.id,
            recipient=recipient,
            context=context or {},
            expires_at=now + ACCOUNT_MESSAGE_LIFETIME,
            urgent=True,
            language=reach.patient.language,
        ),
        now=now,
    )


async def plan_new_link(
    conn: asyncpg.Connection, patient_id: int, *, now: datetime, asked_by_patient: bool
) -> list[int]:
    """The patient's current private link, to the contacts on file (email if there is one, SMS
    with care SMS consent); the link itself is minted at send time. Staff call this after
    `patients.renew_links`, so each renewal sends once; a patient asking from an old link gets
    at most one message an hour. Returns the rows written (none: nobody to write to, or asked
    again within the hour)."""
    reach = await reach_of(conn, patient_id)
    if reach is None:
        return []
    version = reach.patient.link_version
    # Per link version, and for a patient's own request per hour too: repeated clicks on an
    # expired link's page cannot fill someone's phone with messages.
    suffix = f":h{now:%Y%m%d%H}" if asked_by_patient else ""
    ids = []
    for channel in reach.transactional_channels():
        written = await _enqueue_account(
            conn,
            reach,
            kind=NEW_LINK,
            channel=channel,
            dedupe_key=f"{NEW_LINK}:{channel}:p{patient_id}:v{version}{suffix}",
            now=now,
        )
        if written is not None:
            ids.append(written)
    return ids


async def plan_contact_changed(
    conn: asyncpg.Connection, before: Patient, after: Patient, *, now: datetime
) -> list[int]:
    """Tell the contacts a patient had before that their mobile or email was changed (through
    the private link): a changed email is told at the old address; a changed mobile by SMS to
    the old number when care SMS was allowed, else by email to the address still on file.

    The notice names no new contact and carries no link: the old number may belong to someone
    else by now, and if the change was not the patient's, the old contact is how they learn.
    """
    reach = await reach_of(conn, after.id)
    if reach is None:
        return []
    fields = sorted(f for f in ("mobile", "email") if getattr(before, f) != getattr(after, f))
    told: list[tuple[Channel, str, str]] = []  # (channel, address, which one)
    if before.email and before.email != after.email:
        told.append(("email", before.email, "old"))
    if before.mobile and before.mobile != after.mobile:
        consents = await consent_store.current(conn, after.id)
        care_sms = consents.get("care_sms")
        if care_sms is not None and care_sms.granted and after.sms_opted_out_at is None:
            told.append(("sms", before.mobile, "old"))
        elif after.email and before.email == after.email:
            told.append(("email", after.email, "current"))
    ids: list[int | None] = []
    for channel, address, which in told:
        ids.append(
            await _enqueue_account(
                conn,
                reach,
                kind=CONTACT_CHANGED,
                channel=channel,
                dedupe_key=f"{CONTACT_CHANGED}:p{after.id}:v{after.version}:{channel}:{which}",
                now=now,
                recipient=address,
                context={"fields": fields, "changed_at": iso(now)},
            )
        )
    return [i for i in ids if i is not None]
