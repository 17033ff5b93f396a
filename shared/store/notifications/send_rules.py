"""Send-time rules that look at other rows (shared/store/notifications/), for
services/notifier/preparing.py and send_checks.py: the daily limit's counts, merging a
patient's nearby reminders into one message, and the sender's pace (a rate shared by every
replica).

Invariants: counts and merge candidates are read for a whole batch in one statement; merging
locks the rows it folds (SKIP LOCKED: a row another worker holds goes on its own) and never
takes an urgent row; a sender slot is handed out once, by one statement moving `sender_pace`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from shared.store import Executor
from shared.store.notifications.rows import Notification


@dataclass(frozen=True)
class DayWindow:
    """A patient's local day on one channel, as instants: [start, end)."""

    patient_id: int
    channel: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class PatientFacts:
    """What the daily limit and merging need about a batch's patients."""

    # (patient, channel) → non-urgent messages of the capped kinds sent in the window, or being
    # sent right now by any worker
    sent_today: dict[tuple[int, str], int]
    # (patient, channel) → rows lock_merge_candidates could find for a reminder of theirs
    mergeable: dict[tuple[int, str], set[int]]


async def patient_facts(
    db: Executor,
    windows: Sequence[DayWindow],
    *,
    exempt_kinds: list[str],
    merge_keys: Sequence[tuple[int, str]],
    merge_kinds: list[str],
    due_until: datetime,
    worker: str,
    own_claimed: list[int],
) -> PatientFacts:
    """Both facts for a whole batch in one statement (a round trip costs more than the
    lookups): per window, a count on the patient index; per merge key, the rows a reminder
    could absorb, read without locks (merge_nearby locks and checks again). The batch's own
    rows (`own_claimed`) do not count toward the limit."""
    rows = await db.fetch(
        """
        SELECT 'sent' AS fact, w.patient_id, w.channel,
               (SELECT count(*) FROM notification n
                WHERE n.patient_id = w.patient_id AND n.channel = w.channel AND NOT n.urgent
                  AND NOT (n.kind = ANY($5::text[])) AND n.id <> ALL($11::bigint[])
                  AND ((n.sent_at >= w.day_start AND n.sent_at < w.day_end)
                       OR n.status = 'sending')) AS sent,
               NULL::bigint AS id
        FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[])
             AS w(patient_id, channel, day_start, day_end)
        UNION ALL
        SELECT 'merge', k.patient_id, k.channel, NULL, m.id
        FROM unnest($6::bigint[], $7::text[]) AS k(patient_id, channel)
        CROSS JOIN LATERAL (
            SELECT id FROM notification
            WHERE patient_id = k.patient_id AND channel = k.channel
              AND kind = ANY($8::text[]) AND due_at <= $9 AND NOT urgent
              AND (status = 'scheduled'
                   OR (status = 'sending' AND leased_by = $10 AND id = ANY($11::bigint[])))
        ) AS m
        """,
        [w.patient_id for w in windows],
        [w.channel for w in windows],
        [w.start for w in windows],
        [w.end for w in windows],
        exempt_kinds,
        [k[0] for k in merge_keys],
        [k[1] for k in merge_keys],
        merge_kinds,
        due_until,
        worker,
        own_claimed,
    )
    facts = PatientFacts({}, {})
    for row in rows:
        key = (row["patient_id"], row["channel"])
        if row["fact"] == "sent":
            facts.sent_today[key] = int(row["sent"])
        else:
            facts.mergeable.setdefault(key, set()).add(row["id"])
    return facts


@dataclass(frozen=True)
class MergeCandidate:
    id: int
    kind: str
    appointment_id: int | None
    appointment_version: int | None
    context: dict[str, Any]
    expires_at: datetime | None


async def lock_merge_candidates(
    conn: asyncpg.Connection,
    target: Notification,
    *,
    kinds: list[str],
    due_until: datetime,
    own_claimed: list[int],
    worker: str,
) -> list[MergeCandidate]:
    """The patient's other reminders on the same channel due by `due_until`, locked for the
    caller's transaction: scheduled ones, and ones this worker claimed in the same batch.
    Rows another worker holds are skipped (they go on their own)."""
    rows = await conn.fetch(
        """
        SELECT id, kind, appointment_id, appointment_version, context, expires_at
        FROM notification
        WHERE patient_id = $1 AND channel = $2 AND id <> $3 AND kind = ANY($4::text[])
          AND due_at <= $5 AND NOT urgent
          AND (status = 'scheduled'
               OR (status = 'sending' AND leased_by = $6 AND id = ANY($7::bigint[])))
        ORDER BY due_at, id
        FOR NO KEY UPDATE SKIP LOCKED
        """,
        target.patient_id,
        target.channel,
        target.id,
        kinds,
        due_until,
        worker,
        own_claimed,
    )
    return [MergeCandidate(**dict(r)) for r in rows]


async def merge_into(
    conn: asyncpg.Connection,
    target_id: int,
    merged: list[MergeCandidate],
    *,
    context: dict[str, Any],
    now: datetime,
) -> None:
    """Suppress `merged` (locked by lock_merge_candidates) as merged into `target_id`, whose
    context gains `context` (the merged appointments and kinds the message now covers)."""
    reason = f"merged into notification {target_id}"
    rows = await conn.fetch(
        """
        WITH picked AS (
            SELECT id, status AS old_status FROM notification
            WHERE id = ANY($1::bigint[]) AND status IN ('scheduled', 'sending')
        ), merged AS (
            UPDATE notification n SET status = 'suppressed', status_reason = $2,
                   lease_until = NULL, updated_at = $3
            FROM picked WHERE n.id = picked.id
            RETURNING n.id, picked.old_status
        )
        INSERT INTO notification_event (notification_id, at, from_status, to_status, reason)
        SELECT id, $3, old_status, 'suppressed', $2 FROM merged
        RETURNING notification_id
        """,
        [m.id for m in merged],
        reason,
        now,
    )
    if rows:
        await conn.execute(
            "UPDATE notification SET context = context || $2::jsonb, updated_at = $3 WHERE id = $1",
            target_id,
            context,
            now,
        )


async def unmerge(
    conn: Executor, target_id: int, merged_ids: list[int], *, now: datetime, reason: str
) -> list[int]:
    """Rows merged into `target_id`, which ends without sending (its own appointment was
    cancelled, it expired), go back to scheduled, due now, to be checked and sent on their
    own."""
    rows = await conn.fetch(
        """
        WITH restored AS (
            UPDATE notification SET status = 'scheduled', due_at = $3, status_reason = $4,
                   updated_at = $3
            WHERE id = ANY($1::bigint[]) AND status = 'suppressed'
              AND status_reason = 'merged into notification ' || $2::bigint
            RETURNING id
        ), events AS (
            INSERT INTO notification_event (notification_id, at, from_status, to_status, reason)
            SELECT id, $3, 'suppressed', 'scheduled', $4 FROM restored
        )
        SELECT id FROM restored ORDER BY id
        """,
        merged_ids,
        target_id,
        now,
        reason,
    )
    return [r["id"] for r in rows]


# -- the sender's pace (rate limit shared by every replica) --------------------------------------


async def reserve_sender_slot(
    conn: Executor, *, sender: str, now: datetime, cost: timedelta, urgent: bool = False
) -> datetime:
    """Reserve the next send time of `sender` for a message costing `cost` (its segments at the
    sender's rate) and return it. One row per sender, moved forward by one statement, so
    replicas never hand out the same slot. An urgent message goes now and pushes the queue back
    (the carrier sees at most one message over the rate)."""
    next_free = await conn.fetchval(
        """
        INSERT INTO sender_pace AS p (sender, next_free_at)
        VALUES ($1, $2::timestamptz + $3::interval)
        ON CONFLICT (sender) DO UPDATE
            SET next_free_at = greatest(p.next_free_at, $2::timestamptz) + $3::interval
        RETURNING next_free_at
        """,
        sender,
        now,
        cost,
    )
    return now if urgent else next_free - cost
