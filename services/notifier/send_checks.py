"""Send-time checks: whether a claimed row may go now, must wait, or ends here.

Rows are planned days ahead; by the time one is due the appointment may be cancelled or moved,
the patient may have withdrawn consent or opted out, or it may be 22:00 where the patient lives.
The rules about the appointment and consent are the planner's own (shared/outbox_plan.py), so
planning and sending never disagree.

Outcomes: `Stop` ends the row (cancelled, suppressed, expired) with a reason; `Wait` puts it
back with a later due time and a reason; None lets it go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from shared.domain.contact import may_text
from shared.messaging import MessageContext
from shared.messaging.context import STAFF_KINDS
from shared.outbox_plan import (
    ACCOUNT_KINDS,
    SESSION_PROPOSAL,
    TRANSACTIONAL_KINDS,
    needs_consent,
    stale_reason,
)
from shared.store import appointments, notifications
from shared.store.appointments import Appointment
from shared.store.notifications.dispatch import SettledStatus
from shared.store.notifications.rows import Notification

REMINDER_KINDS = frozenset({"reminder_72h", "reminder_24h", "reminder_2h"})
# A 2 h reminder exists for patients who missed a session before; folding it into an earlier
# message would defeat it, so it may absorb others but is never absorbed.
MERGEABLE_KINDS = frozenset({"reminder_72h", "reminder_24h"})
# Messages answering something the patient or staff just did: the daily limit is for the ones
# we send on our own schedule. (Urgent rows are exempt from it and from quiet hours anyway.)
# Aftercare and check-ins follow the session the patient just had (safety follow-up): a
# reminder sent earlier that day must not push them to tomorrow (quiet hours still hold them).
UNCAPPED_KINDS = (
    TRANSACTIONAL_KINDS
    | ACCOUNT_KINDS
    | {"reply", "opt_in_confirmation", "staff_alert", "aftercare", "check_in"}
)
# Messages about an upcoming (or, for the notice, a cancelled) appointment: they must match it.
# Other kinds may name an appointment (an alert about a session) without depending on its state:
# aftercare is about a completed session, so a completed appointment must never cancel it.
APPOINTMENT_KINDS = REMINDER_KINDS | TRANSACTIONAL_KINDS | {SESSION_PROPOSAL}
# Written to staff, or answering the patient's own message: no care consent is involved.
CONSENT_FREE_KINDS = frozenset({"staff_alert", "reply"})


@dataclass(frozen=True)
class Stop:
    status: SettledStatus
    reason: str


@dataclass(frozen=True)
class Wait:
    due_at: datetime
    reason: str


@dataclass(frozen=True)
class Recount:
    """Decide again once the messages being sent right now have gone."""


@dataclass(frozen=True)
class QuietHours:
    """The window in which scheduled messages may go out, in the recipient's local time."""

    start: time
    end: time

    def is_open(self, local: time) -> bool:
        if self.start == self.end:
            return True  # no quiet hours configured
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end  # a window across midnight

    def next_opening(self, now: datetime, zone: ZoneInfo, *, after_day: bool = False) -> datetime:
        """The next start of the window after `now` (or on a later day than today's)."""
        local = now.astimezone(zone)
        day = local.date() + timedelta(days=1 if after_day else 0)
        while True:
            opening = datetime.combine(day, self.start, tzinfo=zone)
            if opening > local:
                return opening
            day += timedelta(days=1)


# -- the row itself, its appointment, its recipient ---------------------------------------------


def expiry_stop(notification: Notification, now: datetime) -> Stop | None:
    if notification.expires_at is not None and now >= notification.expires_at:
        return Stop("expired", "expired before it could be sent")
    return None


def appointment_stop(notification: Notification, appointment: Appointment | None) -> Stop | None:
    """Cancelled when the appointment is off or moved since the row was planned (a reminder
    must never go out with the old time)."""
    if notification.appointment_id is None or notification.kind not in APPOINTMENT_KINDS:
        return None
    if appointment is None:
        return Stop("cancelled", "appointment no longer exists")
    reason = stale_reason(
        notification.kind, notification.appointment_version, notification.context, appointment
    )
    return None if reason is None else Stop("cancelled", reason)


def recipient_stop(notification: Notification, ctx: MessageContext) -> Stop | None:
    """Suppressed when there is nobody to write to or the patient does not allow it."""
    if ctx.recipient is None:
        return Stop("suppressed", f"no {notification.channel} address for the recipient")
    patient = ctx.patient
    if patient is None or notification.kind in STAFF_KINDS:
        return None  # the patient's choices are about messages to the patient
    if notification.channel == "sms" and patient.sms_opted_out_at is not None:
        return Stop("suppressed", "patient opted out of SMS")
    if notification.channel == "sms" and not may_text(ctx.recipient, ctx.clinic.texts_to):
        # Stored before the clinic's SMS countries were set (or narrowed): texts to a country
        # the clinic does not serve are what SMS pumping runs up, so none go.
        return Stop("suppressed", "mobile outside the clinic's SMS countries")
    if notification.kind in CONSENT_FREE_KINDS:
        return None
    consent_kind = needs_consent(notification.kind, notification.channel)
    if consent_kind is not None:
        consent = ctx.consents.get(consent_kind)
        if consent is None or not consent.granted:
            return Stop("suppressed", f"no {consent_kind} consent")
    return None


def stop_now(notification: Notification, ctx: MessageContext, now: datetime) -> Stop | None:
    return (
        expiry_stop(notification, now)
        or appointment_stop(notification, ctx.appointment)
        or recipient_stop(notification, ctx)
    )


def wait_or_expire(notification: Notification, wait: Wait) -> Wait | Stop:
    """A wait that would end after the row's expiry ends it now instead."""
    if notification.expires_at is not None and wait.due_at >= notification.expires_at:
        return Stop("expired", f"{wait.reason}; that is after its expiry")
    return wait


# -- when it may go -------------------------------------------------------------------------------


def quiet_hours_wait(
    notification: Notification, now: datetime, zone: ZoneInfo, quiet: QuietHours
) -> Wait | None:
    if notification.urgent or quiet.is_open(now.astimezone(zone).time()):
        return None
    opening = quiet.next_opening(now, zone)
    return Wait(opening, f"quiet hours: waits until {quiet.start:%H:%M} {zone.key}")


def is_capped(notification: Notification) -> bool:
    """Counts toward (and is held to) the daily limit."""
    return (
        not notification.urgent
        and notification.patient_id is not None
        and notification.kind not in UNCAPPED_KINDS
    )


def local_day(
    notification: Notification, now: datetime, zone: ZoneInfo
) -> notifications.send_rules.DayWindow:
    assert notification.patient_id is not None
    day = now.astimezone(zone).date()
    return notifications.send_rules.DayWindow(
        notification.patient_id,
        notification.channel,
        datetime.combine(day, time(0), tzinfo=zone),
        datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone),
    )


def day_windows(
    rows: list[tuple[Notification, ZoneInfo]], now: datetime
) -> list[notifications.send_rules.DayWindow]:
    """The local days the daily limit counts in, for the capped rows among `rows` (with their
    patients' zones): one per patient and channel."""
    windows = {
        (n.patient_id, n.channel): local_day(n, now, zone)
        for n, zone in rows
        if is_capped(n) and n.patient_id is not None
    }
    return list(windows.values())


def daily_limit_wait(
    notification: Notification,
    now: datetime,
    zone: ZoneInfo,
    quiet: QuietHours,
    limit: int,
    *,
    sent: int,
    going: int = 0,
) -> Wait | Recount | None:
    """At most `limit` scheduled messages per patient, channel and local day; later ones wait
    for the next day's window. `sent`: those sent today or being sent elsewhere (sent_today);
    `going`: the patient's rows of the same batch decided before this one, whose outcome is not
    known yet. When only those reach the limit the answer is Recount: decide again once they
    are sent (one may yet be cancelled or fail), rather than put the row off until tomorrow."""
    if limit <= 0 or not is_capped(notification):
        return None
    if sent >= limit:
        opening = quiet.next_opening(now, zone, after_day=True)
        return Wait(opening, f"daily limit of {limit} reached: waits for tomorrow's window")
    if sent + going >= limit:
        return Recount()
    return None


# -- merging nearby reminders ---------------------------------------------------------------------


async def merge_nearby(
    conn: asyncpg.Connection,
    notification: Notification,
    *,
    now: datetime,
    window: timedelta,
    worker: str,
    own_claimed: list[int],
) -> dict[str, Any] | None:
    """Fold the patient's other reminders due within `window` into this one: they become
    suppressed ("merged into notification N") and this row's context lists their appointments,
    so one message names every session. Returns the row's new context, None if nothing merged.

    Runs in one transaction holding this row and the merged ones; a candidate whose own
    appointment is off or moved is left alone (its own checks end it).
    """
    if window <= timedelta(0) or notification.kind not in REMINDER_KINDS or notification.urgent:
        return None
    if notification.patient_id is None:
        return None
    async with conn.transaction():
        if not await notifications.dispatch.hold_for_send(conn, notification.id, worker=worker):
            return None
        candidates = await notifications.send_rules.lock_merge_candidates(
            conn,
            notification,
            kinds=sorted(MERGEABLE_KINDS),
            due_until=now + window,
            own_claimed=own_claimed,
            worker=worker,
        )
        merged = [c for c in candidates if await _still_valid(conn, c, notification, now)]
        if not merged:
            return None
        addition = _merged_context(notification.context, merged)
        await notifications.send_rules.merge_into(
            conn, notification.id, merged, context=addition, now=now
        )
    return {**notification.context, **addition}


async def _still_valid(
    conn: asyncpg.Connection,
    candidate: notifications.send_rules.MergeCandidate,
    target: Notification,
    now: datetime,
) -> bool:
    if candidate.expires_at is not None and candidate.expires_at <= now:
        return False
    if candidate.appointment_id is None:
        return False
    appointment = await appointments.get(conn, candidate.appointment_id)
    if appointment is None or appointment.patient_id != target.patient_id:
        return False
    reason = stale_reason(
        candidate.kind, candidate.appointment_version, candidate.context, appointment
    )
    return reason is None


def _merged_context(
    context: dict[str, Any], merged: list[notifications.send_rules.MergeCandidate]
) -> dict[str, Any]:
    def listed(key: str) -> list[Any]:
        value = context.get(key)
        return list(value) if isinstance(value, list) else []

    appointment_ids = listed("merged_appointment_ids")
    kinds = listed("merged_kinds")
    notification_ids = listed("merged_notification_ids")
    for candidate in merged:
        if candidate.appointment_id not in appointment_ids:
            appointment_ids.append(candidate.appointment_id)
        if candidate.kind not in kinds:
            kinds.append(candidate.kind)
        notification_ids.append(candidate.id)
    return {
        "merged_appointment_ids": appointment_ids,
        "merged_kinds": kinds,
        "merged_notification_ids": notification_ids,
    }


def covered_appointment_ids(notification: Notification) -> list[int]:
    """Every appointment the message talks about: its own and those listed in its context (a
    booking's sessions, merged reminders), sorted (the order locks are taken in)."""
    ids: set[int] = set()
    if notification.appointment_id is not None:
        ids.add(notification.appointment_id)
    for key in ("appointment_ids", "merged_appointment_ids"):
        values = notification.context.get(key)
        if isinstance(values, list):
            ids.update(v for v in values if isinstance(v, int) and not isinstance(v, bool))
    return sorted(ids)
