"""Aftercare check-ins: planning them when a session is completed, choosing how each is asked,
reading the patient's answer and its tier, and the one place an answer is recorded.

Planning (`plan_for_completed`, called by shared.domain.after_session.on_completed in the
completing transaction): one `check_in` per step of the treatment's plan
(shared/store/check_in_plans.py), due at the step's time in the patient's zone and moved to
the opening of the allowed window (quiet hours) when it falls outside, plus the outbox row that
asks it on the channel the patient allows: SMS (care SMS consent, a mobile, not opted out),
else email (care email consent; the email carries one signed link per answer), else none: the
follow-up sweep puts the patient on the call list at the due time.

Channels are decided again whenever the patient's consents change (`rechannel_for_patient`,
from shared.outbox_plan.on_consents_changed: an SMS opt-out moves the check-ins still to come
to email, or to a call) and by the follow-up sweep (services/scheduler/check_in_follow_up.py)
for any check-in whose message ended without being sent. Safety follow-up is never silently
dropped: every open check-in ends answered, or on the call list.

Tiers: a numbered answer has its plan's tier; words in any reply are read for danger signs
(shared/domain/danger_words.py): signs of an allergic reaction make it `emergency`, signs of
infection `urgent` (never lowering a numbered answer's tier); words without a number or a sign
are `routine` (a person reads them in the inbox).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from shared.domain import adverse_events
from shared.domain.appointment_changes import Change, clinic_of
from shared.domain.danger_words import danger_signs
from shared.domain.reach import Reach, reach_of
from shared.messaging.context import patient_zone
from shared.store import check_in_plans, check_ins, notifications
from shared.store.appointments import Appointment
from shared.store.check_in_plans import PlanStep, Tier
from shared.store.check_ins import CheckIn, CheckInChannel, Via
from shared.store.notifications.outbox import NewNotification

KIND = "check_in"
# A check-in message still worth sending this long after its due time (the notifier was down,
# held by quiet hours); after that the follow-up sweep gives it to staff.
SEND_WITHIN = timedelta(days=3)
# An emailed answer link opens this long after the check-in was due.
LINK_LIFETIME = timedelta(days=30)
TIER_ORDER: dict[Tier, int] = {"fine": 0, "routine": 1, "urgent": 2, "emergency": 3}
# danger_words' sign names that mean an allergic reaction (the handout's emergency tier); the
# others there are signs of infection (its urgent tier).
EMERGENCY_SIGNS = frozenset(
    {"breathing", "throat", "swelling of lips, tongue or face", "fainting", "hives"}
)
# "1", "1.", " 2 ", "3 - it hurts": a leading number is the numbered answer.
_LEADING_DIGIT = re.compile(r"^\s*(\d{1,2})(?!\d)(?:\s*[.):!,-]?\s*)(.*)$", re.DOTALL)


# -- when -----------------------------------------------------------------------------------------


def step_due(step: PlanStep, completed_at: datetime, zone: ZoneInfo) -> datetime:
    """The step's moment: elapsed hours after completion, or local calendar days later at the
    step's local time (or the completion's own local wall time), whatever the clocks did."""
    if step.offset_hours is not None:
        return completed_at + timedelta(hours=step.offset_hours)
    assert step.offset_days is not None
    local = completed_at.astimezone(zone)
    wall = step.at_local_time or local.time().replace(tzinfo=None)
    day = local.date() + timedelta(days=step.offset_days)
    # fold=0: an ambiguous wall time (autumn change) is its first occurrence; a time skipped by
    # the spring change comes out an hour later, which is what a clock would show.
    moment = datetime.combine(day, wall, tzinfo=zone)
    return moment.astimezone(completed_at.tzinfo)


def inside_window(moment: datetime, zone: ZoneInfo, start: time, end: time) -> datetime:
    """`moment`, or the next opening of the allowed window (quiet hours) when it is outside."""
    if start == end:
        return moment
    local = moment.astimezone(zone)
    wall = local.time().replace(tzinfo=None)
    open_now = start <= wall < end if start < end else (wall >= start or wall < end)
    if open_now:
        return moment
    day = local.date() if wall < start else local.date() + timedelta(days=1)
    return datetime.combine(day, start, tzinfo=zone).astimezone(moment.tzinfo)


# -- how ------------------------------------------------------------------------------------------


def channel_for(reach: Reach | None) -> CheckInChannel:
    if reach is None:
        return "call"
    return reach.reminder_channel() or "call"


async def ask(
    conn: asyncpg.Connection,
    check_in: CheckIn,
    channel: CheckInChannel,
    *,
    due_at: datetime,
    now: datetime,
    nudge: bool = False,
) -> int | None:
    """The outbox row that asks the check-in (or nudges) on `channel`; None for 'call'. Its
    dedupe key is per check-in and channel (`check_in:{id}:{channel}`, `...:nudge`); one asked
    again after its row ended takes the next free key."""
    if channel == "call":
        return None
    base = f"{KIND}:{check_in.id}:{channel}" + (":nudge" if nudge else "")
    used = await notifications.outbox.dedupe_keys_for_appointment(conn, check_in.appointment_id)
    key, n = base, 1
    while key in used:
        n += 1
        key = f"{base}:r{n}"
    context: dict[str, Any] = {
        "check_in_id": check_in.id,
        "question": check_in.question,
        "answers": [{"digit": a.digit, "label": a.label} for a in check_in.answers],
        "nudge": nudge,
        "answer_until": (check_in.due_at + LINK_LIFETIME).isoformat(),
    }
    return await notifications.outbox.insert(
        conn,
        NewNotification(
            clinic_id=check_in.clinic_id,
            kind=KIND,
            channel=channel,
            template=KIND,
            due_at=due_at,
            dedupe_key=key,
            patient_id=check_in.patient_id,
            appointment_id=check_in.appointment_id,
            context=context,
            expires_at=due_at + SEND_WITHIN,
        ),
        now=now,
    )


async def plan_for_completed(
    conn: asyncpg.Connection, appointment: Appointment, change: Change
) -> list[CheckIn]:
    """The treatment's check-ins for a session just completed (none without a plan or a
    patient); safe to call twice (one check-in per session and step)."""
    if appointment.patient_id is None:
        return []
    steps = await check_in_plans.for_treatment(conn, appointment.treatment_id)
    if not steps:
        return []
    clinic = await clinic_of(conn, appointment.clinic_id)
    reach = await reach_of(conn, appointment.patient_id)
    zone = patient_zone(reach.patient if reach else None, clinic)
    channel = channel_for(reach)
    planned: list[CheckIn] = []
    for step in steps:
        due = inside_window(
            step_due(step, change.now, zone), zone, clinic.quiet_start, clinic.quiet_end
        )
        row = await check_ins.insert(
            conn,
            check_ins.NewCheckIn(
                clinic_id=appointment.clinic_id,
                patient_id=appointment.patient_id,
                appointment_id=appointment.id,
                step_id=step.id,
                position=step.position,
                question=step.question,
                answers=step.answers,
                nudge_after_hours=step.nudge_after_hours,
                call_after_hours=step.call_after_hours,
                due_at=due,
                channel=channel,
            ),
            now=change.now,
        )
        if row is None:
            continue
        await ask(conn, row, channel, due_at=due, now=change.now)
        planned.append(row)
    return planned


async def rechannel_for_patient(conn: asyncpg.Connection, patient_id: int, *, now: datetime) -> int:
    """The patient's consents changed: check-ins not asked yet move to the channel now allowed
    (the waiting row on the old channel is cancelled, a new one written on the new channel at
    the same due time; none left: staff call at the due time). Returns how many moved."""
    reach = await reach_of(conn, patient_id)
    channel = channel_for(reach)
    moved = 0
    for check_in in await check_ins.open_for_patient(conn, patient_id):
        if check_in.status != "planned":
            continue  # asked already: the sweep's nudge or call picks the channel then
        if await reask(conn, check_in, channel, now=now):
            moved += 1
    return moved


async def reask(
    conn: asyncpg.Connection, check_in: CheckIn, channel: CheckInChannel, *, now: datetime
) -> bool:
    """Ask a planned check-in on `channel` unless a live row already asks it there: waiting rows
    on another channel are cancelled. True when something changed."""
    rows = [
        r for r in await notifications.outbox.rows_for_check_in(conn, check_in.id) if not r.nudge
    ]
    live = [r for r in rows if r.status in ("scheduled", "sending", "sent", "delivered", "unknown")]
    if any(r.channel == channel for r in live) or any(r.status != "scheduled" for r in live):
        return False
    for r in live:
        await notifications.outbox.cancel_scheduled(
            conn, r.id, reason=f"check-in now asked by {channel}", now=now
        )
    due = max(check_in.due_at, now)
    await check_ins.set_channel(conn, check_in.id, channel, now=now)
    await ask(conn, check_in, channel, due_at=due, now=now)
    return True


# -- answers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Triage:
    """What an answer means: the numbered answer it gave (if any), its tier, the danger signs
    its words named, and whether a person should read the words (free text)."""

    digit: int | None
    tier: Tier
    signs: list[str]
    free_text: bool


def read_answer(check_in: CheckIn, text: str, language: str = "en") -> Triage:
    """A digit ("1", "1.", " 2 ", "3 it hurts") that is one of the check-in's answers takes its
    tier; any words are read for danger signs too, which can only raise the tier."""
    by_digit = {a.digit: a for a in check_in.answers}
    digit: int | None = None
    rest = text
    match = _LEADING_DIGIT.match(text)
    if match is not None and int(match.group(1)) in by_digit:
        digit, rest = int(match.group(1)), match.group(2)
    signs = danger_signs(text, language)
    tier: Tier = by_digit[digit].tier if digit is not None else "routine"
    if signs:
        sign_tier: Tier = "emergency" if EMERGENCY_SIGNS.intersection(signs) else "urgent"
        if TIER_ORDER[sign_tier] > TIER_ORDER[tier]:
            tier = sign_tier
    return Triage(digit, tier, signs, free_text=bool(rest.strip()) and digit is None)


async def record_answer(
    conn: asyncpg.Connection, check_in: CheckIn, answer: str, via: Via, change: Change
) -> Triage | None:
    """THE place a check-in answer is recorded (SMS reply, emailed link, staff), in the caller's
    transaction: reads the answer's tier and writes it on the check-in. None when the check-in
    was answered already (the first answer stands) or cancelled.

    A tier above fine opens an adverse event here, in the same transaction, which alerts staff
    for urgent and emergency answers (shared.domain.adverse_events.report)."""
    triage = read_answer(check_in, answer)
    recorded = await check_ins.record_answer(
        conn,
        check_in.id,
        text=answer,
        digit=triage.digit,
        tier=triage.tier,
        via=via,
        now=change.now,
    )
    if recorded is None:
        return None
    if triage.tier != "fine":
        await adverse_events.report(
            conn,
            clinic_id=check_in.clinic_id,
            patient_id=check_in.patient_id,
            appointment_id=check_in.appointment_id,
            tier=triage.tier,
            symptoms=_symptoms(check_in, answer, triage),
            source="check_in",
            check_in_id=check_in.id,
            change=change,
        )
    return triage


def _symptoms(check_in: CheckIn, answer: str, triage: Triage) -> str:
    """What the patient reported, in words a clinician reads: the numbered answer's label as
    the plan worded it, then what they wrote."""
    chosen = next((a for a in check_in.answers if a.digit == triage.digit), None)
    said = answer.strip()
    if chosen is None:
        return said
    if said.rstrip(".") == str(chosen.digit):
        return f"answered {chosen.digit}: {chosen.label}"
    return f"answered {chosen.digit}: {chosen.label} / wrote: {said}"


def answer_template(tier: Tier) -> str:
    """The SMS template that answers a check-in reply of this tier."""
    return f"answer_check_in_{tier}"
