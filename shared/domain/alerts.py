"""Staff alerts: who is told about an emergency or urgent patient report, how, and who next when
nobody acknowledges (issue 13; clinical-defaults.md "Check-ins and escalation").

Who first:
* emergency: the clinician on call now (on-call rota), by SMS and email;
* urgent, inside clinic hours (any active practitioner's working hours): the escalation list's
  first clinician (an "on call" step counts as whoever is on call); outside them, the on-call
  clinician. The call-back target (`alert_settings.callback_target_minutes`, 1 h by default) is
  stored on the alert.
If that person cannot be found (nobody on call, an empty list) the first reachable step of the
escalation list is used instead; with nobody at all the alert still exists (the admin API lists
it, the scheduler's `regimen_staff_alerts_unrouted` gauge counts it) and the sweep tries again.
The clinic's own phone number is never texted: it is the patients' number (often a landline),
not a person who can acknowledge.

Escalation (the `escalate-alerts` scheduler sweep): an open alert not acknowledged
`escalate_after_minutes` (15 by default) after its last notification goes to the next step of
the escalation list, skipping steps that resolve to nobody reachable or to the person just
alerted; past the end of the list the alert becomes `exhausted` and every active clinic admin
is told once (SMS and email). An exhausted alert can still be acknowledged.

Content is minimum necessary: the SMS (a clinician's phone, a lock screen) carries the tier,
the alert number, the clinic and where to acknowledge, never the patient's name or what they
reported; the email adds the patient's record number and the summary. Every message is an
outbox row of kind `staff_alert` with `urgent=True`: the priority lane, claimed before scheduled
messages, never paced behind them, merged, held by quiet hours or counted in the daily limit.
The rows carry no patient_id, so a patient's STOP or erasure never cancels a staff alert.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from shared.store import Executor, audit, care_team, clinics, staff_alerts
from shared.store.care_team import Member
from shared.store.notifications import outbox
from shared.store.staff_alerts import StaffAlert

__all__ = ["StaffAlert", "acknowledge", "escalate", "raise_alert", "tier_of_signs"]

# The danger signs (shared/domain/danger_words.py names) of clinical-defaults.md's emergency tier;
# the others (fever, pus, spreading redness, severe pain) are its urgent tier.
EMERGENCY_SIGNS = frozenset(
    {"breathing", "throat", "swelling of lips, tongue or face", "fainting", "hives"}
)


def tier_of_signs(signs: list[str]) -> Literal["emergency", "urgent"]:
    """An SMS naming any emergency sign is an emergency; other danger signs are urgent."""
    return "emergency" if EMERGENCY_SIGNS.intersection(signs) else "urgent"


ACKNOWLEDGE_PATH = "POST /api/v1/alerts/{id}/acknowledge"


def _reachable(member: Member | None) -> bool:
    return member is not None and member.active and bool(member.mobile or member.email)


async def _resolve(
    db: Executor, clinic_id: int, step: care_team.Step, now: datetime
) -> Member | None:
    if step.on_call:
        return await care_team.on_call_at(db, clinic_id, now)
    assert step.member_id is not None
    return await care_team.get_member(db, step.member_id)


async def _next_on_list(
    db: Executor,
    clinic_id: int,
    *,
    after: int,
    now: datetime,
    skip: int | None,
    clinician_only: bool = False,
) -> tuple[int, Member] | None:
    """The first step after position `after` that reaches someone (not `skip`)."""
    for step in await care_team.escalation_of(db, clinic_id):
        if step.position <= after:
            continue
        member = await _resolve(db, clinic_id, step, now)
        if not _reachable(member) or member is None or member.id == skip:
            continue
        if clinician_only and member.role != "clinician":
            continue
        return step.position, member
    return None


async def _in_clinic_hours(db: Executor, clinic_id: int, now: datetime) -> bool:
    clinic = await clinics.get(db, clinic_id)
    if clinic is None:
        return False
    local = now.astimezone(ZoneInfo(clinic.time_zone))
    return await care_team.in_clinic_hours(db, clinic_id, local.isoweekday(), local.time())


async def _first_recipient(
    db: Executor, clinic_id: int, tier: str, now: datetime
) -> tuple[int, Member | None]:
    """(list position, member): position -1 when the member came from the rota."""
    if tier == "urgent" and await _in_clinic_hours(db, clinic_id, now):
        found = await _next_on_list(
            db, clinic_id, after=-1, now=now, skip=None, clinician_only=True
        )
        if found is not None:
            return found
    on_call = await care_team.on_call_at(db, clinic_id, now)
    if _reachable(on_call):
        return -1, on_call
    found = await _next_on_list(db, clinic_id, after=-1, now=now, skip=None)
    return found if found is not None else (-1, None)


def _texts(
    alert: StaffAlert, zone: ZoneInfo, purpose: Literal["alert", "exhausted"], escalated: bool
) -> tuple[str, str, str]:
    """(title, SMS text, email text)."""
    tier = alert.tier.capitalize()
    title = f"{tier} alert #{alert.id}"
    how = f"Acknowledge in Regimen's admin API: {ACKNOWLEDGE_PATH.format(id=alert.id)}"
    lead = f"{tier} alert #{alert.id}: a patient reported {alert.tier} symptoms."
    if purpose == "exhausted":
        title = f"{tier} alert #{alert.id} not acknowledged"
        lead = f"{tier} alert #{alert.id}: nobody on the escalation list acknowledged it."
    elif escalated:
        lead = f"{tier} alert #{alert.id}, passed on to you: not acknowledged in time."
    callback = ""
    if alert.callback_due_at is not None:
        callback = f" Call the patient back by {alert.callback_due_at.astimezone(zone):%H:%M}."
    sms = f"{lead}{callback} {how}"
    lines = [lead + callback]
    if alert.patient_id is not None:
        lines.append(f"Patient record #{alert.patient_id}.")
    if alert.summary:
        lines.append(f"Reported: {alert.summary}")
    lines.append(f"Raised at {alert.raised_at.astimezone(zone):%Y-%m-%d %H:%M} ({zone.key}).")
    lines.append(how)
    return title, sms, "\n".join(lines)


async def _notify(
    db: Executor,
    alert: StaffAlert,
    member: Member,
    *,
    step: int,
    now: datetime,
    purpose: Literal["alert", "exhausted"] = "alert",
    escalated: bool = False,
) -> int:
    """Plan the SMS and email to `member` (each address they have); how many were planned."""
    clinic = await clinics.get(db, alert.clinic_id)
    zone = ZoneInfo(clinic.time_zone) if clinic is not None else ZoneInfo("UTC")
    title, sms, email = _texts(alert, zone, purpose, escalated)
    planned = 0
    addresses: list[tuple[Literal["sms", "email"], str | None, str]] = [
        ("sms", member.mobile, sms),
        ("email", member.email, email),
    ]
    for channel, address, text in addresses:
        if not address:
            continue
        notification_id = await outbox.insert(
            db,
            outbox.NewNotification(
                clinic_id=alert.clinic_id,
                kind="staff_alert",
                channel=channel,
                template="staff_alert",
                due_at=now,
                dedupe_key=f"staff_alert:{alert.id}:{purpose}:{step}:{member.id}:{channel}",
                recipient=address,
                context={"title": title, "text": text, "alert_id": alert.id, "tier": alert.tier},
                urgent=True,
            ),
            now=now,
        )
        if notification_id is None:
            continue
        await staff_alerts.record_notification(
            db,
            alert.id,
            step=step,
            member_id=member.id,
            purpose=purpose,
            channel=channel,
            notification_id=notification_id,
            now=now,
        )
        planned += 1
    return planned


async def raise_alert(
    conn: Executor,
    *,
    clinic_id: int,
    tier: Literal["emergency", "urgent"],
    patient_id: int | None,
    now: datetime,
    adverse_event_id: int | None = None,
    inbox_item_id: int | None = None,
    summary: str,
) -> StaffAlert:
    """Raise an alert in the caller's transaction: the row, its first recipient's SMS and email
    in the priority lane, and its escalation time. Never fails for want of a recipient (see the
    module docstring)."""
    timing = await care_team.settings_of(conn, clinic_id)
    callback_due = (
        now + timedelta(minutes=timing.callback_target_minutes) if tier == "urgent" else None
    )
    alert = await staff_alerts.insert(
        conn,
        clinic_id=clinic_id,
        tier=tier,
        patient_id=patient_id,
        adverse_event_id=adverse_event_id,
        inbox_item_id=inbox_item_id,
        summary=summary,
        callback_due_at=callback_due,
        now=now,
    )
    position, member = await _first_recipient(conn, clinic_id, tier, now)
    planned = 0
    if member is not None:
        planned = await _notify(conn, alert, member, step=position, now=now)
    await staff_alerts.move_to(
        conn,
        alert.id,
        step=position,
        member_id=member.id if member is not None else None,
        notified_at=now if planned else None,
        escalate_at=now + timedelta(minutes=timing.escalate_after_minutes),
    )
    await audit.insert(
        conn,
        at=now,
        actor=audit.SYSTEM,
        action="staff_alert.raise",
        entity="staff_alert",
        entity_id=alert.id,
        patient_id=patient_id,
        reason=f"{tier} report",
        details={
            "tier": tier,
            "recipient_member_id": member.id if member is not None else None,
            "messages": planned,
            "adverse_event_id": adverse_event_id,
            "inbox_item_id": inbox_item_id,
        },
    )
    raised = await staff_alerts.get(conn, alert.id)
    assert raised is not None
    return raised


async def escalate(conn: Executor, alert: StaffAlert, *, now: datetime) -> str:
    """Move a due open alert (held by the caller, `staff_alerts.lock_due`) to the next person on
    the escalation list, or mark it exhausted and tell the clinic admins. Returns what happened:
    'escalated' or 'exhausted'."""
    timing = await care_team.settings_of(conn, alert.clinic_id)
    found = await _next_on_list(
        conn, alert.clinic_id, after=alert.step, now=now, skip=alert.recipient_member_id
    )
    while found is not None:
        position, member = found
        planned = await _notify(conn, alert, member, step=position, now=now, escalated=True)
        if planned:
            await staff_alerts.move_to(
                conn,
                alert.id,
                step=position,
                member_id=member.id,
                notified_at=now,
                escalate_at=now + timedelta(minutes=timing.escalate_after_minutes),
            )
            await audit.insert(
                conn,
                at=now,
                actor=audit.SYSTEM,
                action="staff_alert.escalate",
                entity="staff_alert",
                entity_id=alert.id,
                patient_id=alert.patient_id,
                reason=f"not acknowledged within {timing.escalate_after_minutes} minutes",
                details={"from_member_id": alert.recipient_member_id, "to_member_id": member.id},
            )
            return "escalated"
        found = await _next_on_list(
            conn, alert.clinic_id, after=position, now=now, skip=alert.recipient_member_id
        )
    await staff_alerts.mark_exhausted(conn, alert.id, now=now)
    told = []
    for admin in await care_team.admins_of(conn, alert.clinic_id):
        if await _notify(conn, alert, admin, step=alert.step, now=now, purpose="exhausted"):
            told.append(admin.id)
    await audit.insert(
        conn,
        at=now,
        actor=audit.SYSTEM,
        action="staff_alert.exhausted",
        entity="staff_alert",
        entity_id=alert.id,
        patient_id=alert.patient_id,
        reason="nobody on the escalation list acknowledged it",
        details={"admins_told": told},
    )
    return "exhausted"


async def acknowledge(
    conn: Executor, alert_id: int, *, actor: audit.Actor, note: str | None, now: datetime
) -> StaffAlert | None:
    """Acknowledge (stops escalation); None when already acknowledged or unknown. Takes the
    alert's row lock first, so it waits for a sweep deciding this alert right now."""
    if await staff_alerts.lock(conn, alert_id) is None:
        return None
    done = await staff_alerts.acknowledge(conn, alert_id, by=actor.label, note=note, now=now)
    if done is not None:
        await audit.insert(
            conn,
            at=now,
            actor=actor,
            action="staff_alert.acknowledge",
            entity="staff_alert",
            entity_id=alert_id,
            patient_id=done.patient_id,
            reason=note or "",
            details={"tier": done.tier},
        )
    return done
