"""Course progression sweeps: a course whose last session is completed completes (and plans
its maintenance reminder); a course whose next session is overdue goes on the call list.

Why sweeps rather than the completing transaction: a session can be completed by the admin API
today and by other paths later (an import, a correction); the sweep sees the sessions as they
are, whoever changed them, and catches up after downtime.

Safe with any number of scheduler replicas:
* completion claims each finished course with `FOR UPDATE SKIP LOCKED` and completes it only if
  it is still active under that lock; the status change, its audit row and the maintenance
  reminder commit together, so a course is completed, audited and reminded once. (The reminder's
  dedupe key, one per course, is a second guard.)
* the gap check files its call with `call_tasks.file_once`, which inserts only if no task for
  that session and reason was ever filed; two replicas inserting at the same moment meet in the
  open-task unique index and the second does nothing. No lock is needed: the only write is that
  one idempotent insert.
"""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import asyncpg

from shared import outbox_plan
from shared.clock import Clock
from shared.db.transactions import in_transaction
from shared.scheduling import gaps
from shared.scheduling.loader import load_clinic, load_treatment
from shared.store import adverse_events, appointments, audit, call_tasks, series
from shared.store.series import WaitingCourse
from shared.sweeps import Sweep

BATCH = 100
COMPLETION_INTERVAL = timedelta(seconds=60)
GAP_INTERVAL = timedelta(minutes=5)
COMPLETED_REASON = "the last planned session was completed"


async def complete_finished_courses(pool: asyncpg.Pool, clock: Clock) -> int:
    """Complete every active course whose last planned session is completed and which has
    nothing left on the books; plan each one's maintenance reminder. Returns how many.

    Replicas: courses are claimed FOR UPDATE SKIP LOCKED and completed only if still active
    under the lock (see the module docstring)."""
    now = clock.now()

    async def batch(conn: asyncpg.Connection) -> int:
        finished = await series.claim_finished(conn, limit=BATCH)
        completed = 0
        for course in finished:
            if not await series.mark_completed(conn, course.series.id, now=now):
                continue
            completed += 1
            treatment = await load_treatment(conn, course.series.treatment_id)
            last = await appointments.get(conn, course.last_appointment_id)
            planned: list[int] = []
            interval = treatment.maintenance_interval_days if treatment else None
            if interval is not None and last is not None:
                clinic = await load_clinic(conn, course.series.clinic_id)
                zone = clinic.zone if clinic is not None else ZoneInfo("UTC")
                planned = await outbox_plan.plan_maintenance_reminder(
                    conn,
                    series_id=course.series.id,
                    last_session=last,
                    interval_days=interval,
                    zone=zone,
                    now=now,
                )
            await audit.insert(
                conn,
                at=now,
                actor=audit.SYSTEM,
                action="series.complete",
                entity="series",
                entity_id=course.series.id,
                patient_id=course.series.patient_id,
                reason=COMPLETED_REASON,
                details={
                    "by": "course completion sweep",
                    "last_appointment_id": course.last_appointment_id,
                    "maintenance_interval_days": interval,
                    "maintenance_notification_ids": planned,
                },
            )
        return completed

    total = 0
    while True:
        done = await in_transaction(pool, batch)
        total += done
        if done < BATCH:
            return total


def gap_detail(course: WaitingCourse, days: int) -> str:
    """What the front desk reads on the call list (staff only: it may name the course's
    sessions and dates, never clinical details)."""
    zone = ZoneInfo(course.time_zone)
    last_day = course.last_starts_at.astimezone(zone).date()
    review_from = last_day + timedelta(days=2 * course.target_days + 1)
    return (
        f"Session {course.next_position} is not booked: {days} days since session "
        f"{course.last_position} on {last_day.isoformat()}, past the usual maximum of "
        f"{course.max_days} days (target {course.target_days}). Offer the patient a time; "
        f"booked on {review_from.isoformat()} or later (more than twice the target), it will "
        "need clinician review before it goes ahead."
    )


async def file_overdue_gaps(pool: asyncpg.Pool, clock: Clock) -> int:
    """Put every course whose next session is overdue (past the gap's soft maximum, nothing
    booked) on the call list, once per gap; the course stays active. Returns how many calls
    were filed. A course whose delay is an adverse-event hold (an event of the patient holds
    their next session, or one that started after the last session held it and a clinician has
    cleared it) is left alone: the delay is the clinician's, not an overdue gap.

    Replicas: the only write is call_tasks.file_once, which files a session's call once ever
    (see the module docstring)."""
    now = clock.now()
    filed = 0
    after = 0
    while True:
        waiting = await series.waiting_past(pool, now=now, after_id=after, limit=BATCH)
        held = await adverse_events.held_patients(
            pool, [c.patient_id for c in waiting], since=[c.last_starts_at for c in waiting]
        )
        for course in waiting:
            if course.patient_id in held:
                continue
            days = gaps.gap_days(course.last_starts_at, now, ZoneInfo(course.time_zone))
            task = await call_tasks.file_once(
                pool,
                clinic_id=course.clinic_id,
                patient_id=course.patient_id,
                appointment_id=course.last_appointment_id,
                reason="gap_overdue",
                detail=gap_detail(course, days),
                now=now,
            )
            if task is not None:
                filed += 1
        if len(waiting) < BATCH:
            return filed
        after = waiting[-1].series_id


COMPLETE_COURSES = Sweep("complete-courses", COMPLETION_INTERVAL, complete_finished_courses)
FILE_OVERDUE_GAPS = Sweep("course-gaps", GAP_INTERVAL, file_overdue_gaps)
