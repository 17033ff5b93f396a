"""Planning the aftercare message of a completed session (issue 13, item 3).

`plan_aftercare` runs in the completing transaction (shared.domain.after_session) and writes
the outbox rows (kind `aftercare`), so the completion and its aftercare commit together:

* nothing when the treatment has no aftercare template (a consultation), the appointment has no
  patient, or the patient cannot be reached (erased, no consent);
* channels by the patient's care consents, as shared.outbox_plan reads them (`reach_of`): SMS
  with care SMS consent, a mobile and no opt-out; email with care email consent and an address;
  both when both are allowed (aftercare is safety information, not a reminder to pick a channel
  for);
* due `SEND_AFTER` the completion (the patient has left the chair), within the hour the
  clinical defaults ask for, and inside the clinic's hours: the clinic's messaging window
  (quiet_start..quiet_end) in the clinic's zone, so that a patient reading "call the clinic"
  can; a completion late in the evening waits for the next morning's opening. The notifier
  applies the patient's own quiet hours again at send time (for a patient in another zone);
* one row per appointment and channel (dedupe key `aftercare:{channel}:appt{id}`): completing
  is planned once, whatever happens to the appointment's version later;
* the template's content is copied into the row's context with its version: the message says
  what the template said when the session was completed (an edit changes the next completion's
  message, never one already planned). The page behind the link shows the current template.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from shared import outbox_plan
from shared.scheduling.loader import load_clinic
from shared.store import aftercare_templates, notifications
from shared.store.aftercare_templates import AftercareTemplate
from shared.store.appointments import Appointment
from shared.store.notifications.outbox import NewNotification
from shared.store.notifications.rows import Channel

AFTERCARE = "aftercare"
# After the session has ended for the patient: within the hour the clinical defaults ask for.
SEND_AFTER = timedelta(minutes=15)
# Aftercare for a session two days old is no longer "today's"; the check-ins take over.
LIFETIME = timedelta(days=2)


def dedupe_key(channel: Channel, appointment_id: int) -> str:
    return f"{AFTERCARE}:{channel}:appt{appointment_id}"


def inside_window(moment: datetime, zone: ZoneInfo, start: time, end: time) -> datetime:
    """`moment`, or the next opening of the daily window [start, end) in `zone` after it (a
    window may run across midnight; start == end means always open)."""
    if start == end:
        return moment
    local = moment.astimezone(zone)
    clock = local.time()
    is_open = start <= clock < end if start < end else (clock >= start or clock < end)
    if is_open:
        return moment
    day = local.date()
    while True:
        opening = datetime.combine(day, start, tzinfo=zone)
        if opening > local:
            return opening
        day += timedelta(days=1)


def content_context(template: AftercareTemplate) -> dict[str, Any]:
    """What the messages render from (shared/messaging/templates/aftercare.*)."""
    content = template.content
    return {
        "instructions": list(content.instructions),
        "normal_course": content.normal_course,
        "normal_days": content.normal_days,
        "call_when": list(content.call_when),
        "emergency_signs": list(content.emergency_signs),
        "template_version": template.version,
    }


def channels_of(reach: outbox_plan.Reach) -> list[Channel]:
    channels: list[Channel] = []
    if reach.sms:
        channels.append("sms")
    if reach.care_email:
        channels.append("email")
    return channels


async def plan_aftercare(
    conn: asyncpg.Connection, appointment: Appointment, *, now: datetime
) -> list[int]:
    """The aftercare rows of a just-completed appointment; the ids written (none when nothing
    is to be sent or it was planned already)."""
    if appointment.patient_id is None or appointment.status != "completed":
        return []
    template = await aftercare_templates.get(conn, appointment.treatment_id)
    if template is None:
        return []
    reach = await outbox_plan.reach_of(conn, appointment.patient_id)
    clinic = await load_clinic(conn, appointment.clinic_id)
    if reach is None or clinic is None:
        return []
    due_at = inside_window(now + SEND_AFTER, clinic.zone, clinic.quiet_start, clinic.quiet_end)
    context = {
        "starts_at": outbox_plan.iso(appointment.starts_at),
        "completed_at": outbox_plan.iso(now),
        "aftercare": content_context(template),
    }
    ids = []
    for channel in channels_of(reach):
        written = await notifications.outbox.insert(
            conn,
            NewNotification(
                clinic_id=appointment.clinic_id,
                kind=AFTERCARE,
                channel=channel,
                template=AFTERCARE,
                due_at=due_at,
                dedupe_key=dedupe_key(channel, appointment.id),
                patient_id=appointment.patient_id,
                appointment_id=appointment.id,
                appointment_version=appointment.version,
                context=context,
                expires_at=due_at + LIFETIME,
                language=reach.patient.language,
            ),
            now=now,
        )
        if written is not None:
            ids.append(written)
    return ids
