"""Staff alerts (owner of `staff_alert`, `staff_alert_notification`): an emergency or urgent
patient report that a person must acknowledge, and every message it sent.

Invariants: an alert is `open` until someone acknowledges it (who, when, note) or the
escalation list runs out (`exhausted`, which may still be acknowledged); only an open alert has
an `escalate_at`; the escalation sweep moves an alert on only while holding its row
(`lock_due`: FOR UPDATE SKIP LOCKED), and acknowledging takes the same row lock, so an alert is
never escalated after the acknowledgement commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from shared.store import Executor

Tier = Literal["emergency", "urgent"]
AlertStatus = Literal["open", "acknowledged", "exhausted"]


@dataclass(frozen=True)
class StaffAlert:
    """One `staff_alert` row."""

    id: int
    clinic_id: int
    tier: Tier
    adverse_event_id: int | None
    inbox_item_id: int | None
    patient_id: int | None
    summary: str
    raised_at: datetime
    callback_due_at: datetime | None
    step: int
    recipient_member_id: int | None
    notified_at: datetime | None
    escalate_at: datetime | None
    status: AlertStatus
    exhausted_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    acknowledge_note: str | None


@dataclass(frozen=True)
class AlertNotification:
    """One `staff_alert_notification`: a message the alert sent to someone."""

    id: int
    alert_id: int
    step: int
    member_id: int | None
    purpose: Literal["alert", "exhausted"]
    channel: Literal["sms", "email"]
    notification_id: int
    at: datetime


_COLUMNS = """id, clinic_id, tier, adverse_event_id, inbox_item_id, patient_id, summary,
    raised_at, callback_due_at, step, recipient_member_id, notified_at, escalate_at, status,
    exhausted_at, acknowledged_at, acknowledged_by, acknowledge_note"""


def _alert(row: asyncpg.Record) -> StaffAlert:
    return StaffAlert(**dict(row))


async def insert(
    db: Executor,
    *,
    clinic_id: int,
    tier: Tier,
    patient_id: int | None,
    adverse_event_id: int | None,
    inbox_item_id: int | None,
    summary: str,
    callback_due_at: datetime | None,
    now: datetime,
) -> StaffAlert:
    row = await db.fetchrow(
        f"""
        INSERT INTO staff_alert (clinic_id, tier, patient_id, adverse_event_id, inbox_item_id,
                                 summary, raised_at, callback_due_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant
        clinic_id,
        tier,
        patient_id,
        adverse_event_id,
        inbox_item_id,
        summary,
        now,
        callback_due_at,
    )
    assert row is not None
    return _alert(row)


async def get(db: Executor, alert_id: int) -> StaffAlert | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM staff_alert WHERE id = $1",  # noqa: S608 - constant
        alert_id,
    )
    return None if row is None else _alert(row)


async def lock(conn: Executor, alert_id: int) -> StaffAlert | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM staff_alert WHERE id = $1 FOR UPDATE",  # noqa: S608 - constant
        alert_id,
    )
    return None if row is None else _alert(row)


async def lock_due(conn: Executor, *, now: datetime, limit: int) -> list[StaffAlert]:
    """Open alerts whose escalation time has come, locked; rows another replica (or an
    acknowledgement) holds are skipped, and the holder decides them."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM staff_alert
        WHERE status = 'open' AND escalate_at <= $1
        ORDER BY escalate_at, id
        LIMIT $2
        FOR UPDATE SKIP LOCKED
        """,  # noqa: S608 - constant
        now,
        limit,
    )
    return [_alert(row) for row in rows]


async def move_to(
    conn: Executor,
    alert_id: int,
    *,
    step: int,
    member_id: int | None,
    notified_at: datetime | None,
    escalate_at: datetime,
) -> None:
    await conn.execute(
        """
        UPDATE staff_alert SET step = $2, recipient_member_id = $3, notified_at = $4,
               escalate_at = $5
        WHERE id = $1 AND status = 'open'
        """,
        alert_id,
        step,
        member_id,
        notified_at,
        escalate_at,
    )


async def mark_exhausted(conn: Executor, alert_id: int, *, now: datetime) -> None:
    await conn.execute(
        """
        UPDATE staff_alert SET status = 'exhausted', exhausted_at = $2, escalate_at = NULL
        WHERE id = $1 AND status = 'open'
        """,
        alert_id,
        now,
    )


async def acknowledge(
    conn: Executor, alert_id: int, *, by: str, note: str | None, now: datetime
) -> StaffAlert | None:
    """Acknowledge an open or exhausted alert; None when it is already acknowledged (or does
    not exist)."""
    row = await conn.fetchrow(
        f"""
        UPDATE staff_alert SET status = 'acknowledged', acknowledged_at = $2,
               acknowledged_by = $3, acknowledge_note = $4, escalate_at = NULL
        WHERE id = $1 AND status IN ('open', 'exhausted')
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant
        alert_id,
        now,
        by,
        note,
    )
    return None if row is None else _alert(row)


async def list_page(
    db: Executor,
    *,
    clinic_id: int | None,
    statuses: list[str],
    after_id: int | None,
    limit: int,
) -> list[StaffAlert]:
    """Alerts in these statuses, emergencies first, then oldest first... keyset on id."""
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM staff_alert
        WHERE status = ANY($1::text[]) AND ($2::bigint IS NULL OR clinic_id = $2)
          AND ($3::bigint IS NULL OR id > $3)
        ORDER BY id
        LIMIT $4
        """,  # noqa: S608 - constant
        statuses,
        clinic_id,
        after_id,
        limit,
    )
    return [_alert(row) for row in rows]


async def count_unrouted(db: Executor) -> int:
    """Open or exhausted alerts that reached nobody: no message was ever sent for them."""
    return int(
        await db.fetchval(
            """
            SELECT count(*) FROM staff_alert a
            WHERE a.status IN ('open', 'exhausted')
              AND NOT EXISTS (SELECT 1 FROM staff_alert_notification n WHERE n.alert_id = a.id)
            """
        )
    )


async def record_notification(
    conn: Executor,
    alert_id: int,
    *,
    step: int,
    member_id: int | None,
    purpose: Literal["alert", "exhausted"],
    channel: Literal["sms", "email"],
    notification_id: int,
    now: datetime,
) -> None:
    await conn.execute(
        """
        INSERT INTO staff_alert_notification (alert_id, step, member_id, purpose, channel,
                                              notification_id, at)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        """,
        alert_id,
        step,
        member_id,
        purpose,
        channel,
        notification_id,
        now,
    )


async def notifications_of(db: Executor, alert_id: int) -> list[AlertNotification]:
    rows = await db.fetch(
        """
        SELECT id, alert_id, step, member_id, purpose, channel, notification_id, at
        FROM staff_alert_notification WHERE alert_id = $1 ORDER BY id
        """,
        alert_id,
    )
    return [AlertNotification(**dict(row)) for row in rows]


async def for_patient(db: Executor, patient_id: int) -> list[StaffAlert]:
    """Every alert about the patient, oldest first (their safety timeline)."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM staff_alert WHERE patient_id = $1 ORDER BY id",  # noqa: S608 - constant
        patient_id,
    )
    return [_alert(row) for row in rows]
