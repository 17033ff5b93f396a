"""The notifier's sending (shared/store/notifications/), for services/notifier/: claiming due
rows by lane, deciding a batch's sends, the outcome of each call, leases.

A worker claims due rows of one lane (scheduled → sending, with a lease), decides a batch's
sends in one statement (decide_sends: the appointments checked under FOR SHARE, the attempts
committed) and makes the provider calls after that commit, holding no lock; each outcome is
recorded when its call returns (record_outcomes). A live worker renews the leases of its calls
in flight (renew_leases), so only a dead worker's rows run out. Every function that moves a
claimed row checks that the caller still holds it (status 'sending', leased_by = worker): a
worker whose lease was rescued must not write.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg

from shared.store import Executor, affected
from shared.store.notifications.rows import (
    ERASED_PATIENT_KEYS,
    Notification,
    event_if_moved,
    notification_from,
)


@dataclass(frozen=True)
class LaneKey:
    """Which rows a lane sends: one channel, urgent (the priority lane) or not."""

    channel: str
    urgent: bool


@dataclass(frozen=True)
class FreshShare:
    """Of a claim, how many rows go to recently due rows of these kinds first (claim_due)."""

    rows: int
    kinds: Sequence[str]
    within: timedelta


async def claim_due(
    conn: Executor,
    *,
    lane: LaneKey,
    now: datetime,
    lease: timedelta,
    worker: str,
    limit: int,
    fresh: FreshShare | None = None,
) -> list[Notification]:
    """Take up to `limit` due rows of `lane` for `worker`: scheduled → sending with a lease,
    committed by the caller's statement. SKIP LOCKED lets any number of workers claim at once
    without overlap (NO KEY: a row whose event is being inserted, which key-share locks it, is
    not skipped). In due order straight off the lane's partial index: no sort, even for a burst
    of rows due at the same instant, and no reading past another lane's rows.

    `fresh`: up to `fresh.rows` of the `limit` go first to rows of `fresh.kinds` that came due
    within `fresh.within` (in due order, a short range of the same index), the rest to the
    oldest due; so a backlog released at once (the reminders held by quiet hours until 08:00)
    is drained in order while a confirmation enqueued behind it waits one claim, not the whole
    backlog. Only kinds outside the daily limit belong in `fresh.kinds`: a patient's capped
    rows must be decided in due order."""
    share = fresh or FreshShare(0, (), timedelta(0))
    rows = await conn.fetch(
        """
        WITH recent AS MATERIALIZED (
            SELECT id FROM notification
            WHERE status = 'scheduled' AND channel = $5 AND urgent = $6 AND due_at <= $1
              AND due_at > $1::timestamptz - $9::interval AND kind = ANY($8::text[])
            ORDER BY due_at
            LIMIT $7
            FOR NO KEY UPDATE SKIP LOCKED
        ), oldest AS MATERIALIZED (
            SELECT id FROM notification
            WHERE status = 'scheduled' AND channel = $5 AND urgent = $6 AND due_at <= $1
              AND id NOT IN (SELECT id FROM recent)
            ORDER BY due_at
            LIMIT $4 - (SELECT count(*) FROM recent)
            FOR NO KEY UPDATE SKIP LOCKED
        ), picked AS (
            SELECT id FROM recent UNION ALL SELECT id FROM oldest
        ), claimed AS (
            UPDATE notification n SET status = 'sending',
                   lease_until = $1::timestamptz + $2::interval, leased_by = $3, updated_at = $1,
                   lease_renewed_at = clock_timestamp()
            FROM picked WHERE n.id = picked.id AND n.status = 'scheduled'
            RETURNING n.*
        ), events AS (
            INSERT INTO notification_event (notification_id, at, from_status, to_status, reason)
            SELECT id, $1, 'scheduled', 'sending', 'claimed by ' || $3 FROM claimed
        )
        SELECT * FROM claimed ORDER BY due_at, id
        """,
        now,
        lease,
        worker,
        limit,
        lane.channel,
        lane.urgent,
        min(share.rows, limit),
        list(share.kinds),
        share.within,
    )
    return [notification_from(r) for r in rows]


async def next_due_at(db: Executor, lane: LaneKey) -> datetime | None:
    """When the lane's earliest scheduled row comes due (it sleeps until then at most)."""
    return await db.fetchval(  # type: ignore[no-any-return]
        """
        SELECT due_at FROM notification
        WHERE status = 'scheduled' AND channel = $1 AND urgent = $2
        ORDER BY due_at LIMIT 1
        """,
        lane.channel,
        lane.urgent,
    )


async def renew_leases(
    conn: Executor, notification_ids: Sequence[int], *, worker: str, now: datetime, lease: timedelta
) -> int:
    """Extend the leases of the calls `worker` has in flight: while it lives, the rescue sweep
    never mistakes a slow call for a dead worker (no lock is held during the call)."""
    result = await conn.execute(
        """
        UPDATE notification SET lease_until = $3::timestamptz + $4::interval,
               lease_renewed_at = clock_timestamp()
        WHERE id = ANY($1::bigint[]) AND status = 'sending' AND leased_by = $2
        """,
        list(notification_ids),
        worker,
        now,
        lease,
    )
    return affected(result)


async def release(
    conn: Executor, notification_id: int, *, worker: str, now: datetime, reason: str
) -> bool:
    """sending → scheduled, unchanged due time: a claimed row this worker will not send after
    all (it is stopping). False when the worker no longer holds it."""
    released = await conn.fetchval(
        """
        UPDATE notification SET status = 'scheduled', lease_until = NULL, leased_by = NULL,
               updated_at = $3
        WHERE id = $1 AND status = 'sending' AND leased_by = $2
        RETURNING id
        """,
        notification_id,
        worker,
        now,
    )
    return await event_if_moved(
        conn, released, notification_id, now, "sending", "scheduled", reason
    )


async def defer(
    conn: Executor,
    notification_id: int,
    *,
    worker: str,
    due_at: datetime,
    now: datetime,
    reason: str,
    sender_slot: datetime | None = None,
) -> bool:
    """sending → scheduled with a later due time (quiet hours, the daily limit, the sender's
    rate), before any provider call. `sender_slot` keeps a reserved send time so the row does
    not reserve another when it comes back; any other deferral drops an old reservation."""
    deferred = await conn.fetchval(
        """
        UPDATE notification SET status = 'scheduled', due_at = $3, lease_until = NULL,
               leased_by = NULL, updated_at = $4, status_reason = $5,
               context = CASE WHEN $6::timestamptz IS NULL THEN context - 'sender_slot'
                              ELSE context || jsonb_build_object('sender_slot', $6::timestamptz)
                         END
        WHERE id = $1 AND status = 'sending' AND leased_by = $2
        RETURNING id
        """,
        notification_id,
        worker,
        due_at,
        now,
        reason,
        sender_slot,
    )
    return await event_if_moved(
        conn, deferred, notification_id, now, "sending", "scheduled", reason
    )


SettledStatus = Literal["cancelled", "suppressed", "expired", "failed"]


async def settle(
    conn: Executor,
    notification_id: int,
    *,
    worker: str,
    status: SettledStatus,
    reason: str,
    now: datetime,
    error_code: int | None = None,
) -> bool:
    """sending → a final state without (another) provider call: the send-time checks failed
    (cancelled, suppressed, expired) or the message cannot be composed (failed)."""
    settled = await conn.fetchval(
        """
        UPDATE notification SET status = $3, status_reason = $4, error_code = $5,
               lease_until = NULL, updated_at = $6
        WHERE id = $1 AND status = 'sending' AND leased_by = $2
        RETURNING id
        """,
        notification_id,
        worker,
        status,
        reason,
        error_code,
        now,
    )
    return await event_if_moved(conn, settled, notification_id, now, "sending", status, reason)


@dataclass(frozen=True)
class AttemptStart:
    """A provider call about to start: the body's hash and `context` additions (where it goes,
    the email's Message-ID) that reconciliation needs if the call's outcome is lost."""

    notification_id: int
    body_hash: bytes
    context: dict[str, Any]


@dataclass(frozen=True)
class SendCandidate:
    """A composed row about to be decided: its attempt's facts (AttemptStart) and the versions
    of the appointments it was composed from (appointment id → version; an appointment that did
    not exist then is absent)."""

    start: AttemptStart
    covered: Sequence[int]
    seen_versions: dict[int, int]


@dataclass(frozen=True)
class Decision:
    attempts: dict[int, int]  # notification id → attempt id: send these
    changed: set[int]  # held, but an appointment changed since composing: compose again
    lost: set[int]  # no longer held by the worker (rescued, cancelled): not ours to send


async def decide_sends(
    conn: Executor,
    candidates: Sequence[SendCandidate],
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
) -> Decision:
    """The decision to send, in one statement (its own transaction, committed when it returns):
    FOR SHARE on every appointment the messages talk about and the rows held FOR NO KEY UPDATE,
    as lock_for_send does; then, for each row still held whose appointments are at the versions
    it was composed from, the attempt begun: attempts + 1, a fresh lease, the body's hash and
    the context additions, an attempt row with the database's clock as `decided_at`.

    A cancel or move of one of the appointments either committed before (the share lock sees its
    version: the row is `changed`) or waits for this statement's commit (milliseconds; no
    provider call is made before it returns). One round trip for a whole batch."""
    notification_ids = [c.start.notification_id for c in candidates]
    covered = [(c.start.notification_id, a) for c in candidates for a in c.covered]
    seen = [(c.start.notification_id, a, v) for c in candidates for a, v in c.seen_versions.items()]
    rows = await conn.fetch(
        """
        WITH want AS (
            SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::text[]) AS w(id, hash, extra)
        ), covered AS (
            SELECT * FROM unnest($4::bigint[], $5::bigint[]) AS c(id, appointment_id)
        ), seen AS (
            SELECT * FROM unnest($6::bigint[], $7::bigint[], $8::int[])
                AS s(id, appointment_id, version)
        ), locked_appointments AS MATERIALIZED (
            SELECT id, version FROM appointment
            WHERE id IN (SELECT appointment_id FROM covered)
            ORDER BY id FOR SHARE
        ), held AS MATERIALIZED (
            SELECT n.id FROM notification n
            WHERE n.id = ANY($1::bigint[]) AND n.status = 'sending' AND n.leased_by = $9
              AND (SELECT count(*) FROM locked_appointments) >= 0
            ORDER BY n.id FOR NO KEY UPDATE
        ), changed AS (
            SELECT c.id FROM covered c
            LEFT JOIN locked_appointments a ON a.id = c.appointment_id
            LEFT JOIN seen s ON s.id = c.id AND s.appointment_id = c.appointment_id
            WHERE a.version IS DISTINCT FROM s.version
        ), going AS (
            UPDATE notification n SET attempts = n.attempts + 1,
                   lease_until = $10::timestamptz + $11::interval, body_hash = w.hash,
                   context = n.context || w.extra::jsonb, updated_at = $10,
                   lease_renewed_at = clock_timestamp()
            FROM want w
            WHERE n.id = w.id AND n.id IN (SELECT id FROM held)
              AND n.id NOT IN (SELECT id FROM changed)
            RETURNING n.id
        ), started AS (
            INSERT INTO notification_attempt (notification_id, started_at, worker, decided_at)
            SELECT id, $10, $9, clock_timestamp() FROM going
            RETURNING notification_id, id
        )
        SELECT w.id, started.id AS attempt_id, h.id IS NOT NULL AS held
        FROM want w
        LEFT JOIN held h ON h.id = w.id
        LEFT JOIN started ON started.notification_id = w.id
        """,
        notification_ids,
        [c.start.body_hash for c in candidates],
        [json.dumps(c.start.context) for c in candidates],
        [n for n, _ in covered],
        [a for _, a in covered],
        [n for n, _, _ in seen],
        [a for _, a, _ in seen],
        [v for _, _, v in seen],
        worker,
        now,
        lease,
    )
    decision = Decision({}, set(), set())
    for row in rows:
        if row["attempt_id"] is not None:
            decision.attempts[row["id"]] = row["attempt_id"]
        elif row["held"]:
            decision.changed.add(row["id"])
        else:
            decision.lost.add(row["id"])
    return decision


async def hold_for_send(conn: asyncpg.Connection, notification_id: int, *, worker: str) -> bool:
    """Lock the row for the rest of the caller's transaction if the worker still holds it
    (lock_for_send without appointments)."""
    _, held = await lock_for_send(conn, [], [notification_id], worker=worker)
    return notification_id in held


async def lock_for_send(
    conn: asyncpg.Connection,
    appointment_ids: Sequence[int],
    notification_ids: Sequence[int],
    *,
    worker: str,
) -> tuple[dict[int, int], set[int]]:
    """Until the caller's transaction ends (the decision to send; never across a provider call):
    FOR SHARE on the appointments the messages talk about, so a cancel or move (FOR UPDATE)
    either committed before and is seen, or waits for this short transaction and finds the
    messages on their way; then the rows this worker still holds (status 'sending', leased to
    it), locked so that nothing else moves them meanwhile. Appointments before rows, each in id
    order, in one statement, so two senders never deadlock. Returns (appointment id → version,
    ids of rows held). (The appointment read belongs to the appointments store; it shares this
    round trip.)"""
    rows = await conn.fetch(
        """
        SELECT * FROM (
            SELECT 'appointment' AS kind, id, version FROM appointment
            WHERE id = ANY($1::bigint[]) ORDER BY id FOR SHARE
        ) AS appointments
        UNION ALL
        SELECT * FROM (
            SELECT 'notification', id, NULL::int FROM notification
            WHERE id = ANY($2::bigint[]) AND status = 'sending' AND leased_by = $3
            ORDER BY id FOR NO KEY UPDATE
        ) AS held
        """,
        list(appointment_ids),
        list(notification_ids),
        worker,
    )
    versions = {r["id"]: r["version"] for r in rows if r["kind"] == "appointment"}
    return versions, {r["id"] for r in rows if r["kind"] == "notification"}


AttemptOutcome = Literal["sent", "temporary", "permanent", "ambiguous"]


OutcomeStatus = Literal["sent", "scheduled", "failed", "unknown"]


@dataclass(frozen=True)
class SendOutcome:
    """How one provider call ended, for record_outcomes.

    sent: accepted (provider_id, segments); scheduled: a temporary failure, due again at
    `due_at`; failed: permanent, or temporary with no retry left; unknown: the request left and
    no answer came (reconciliation decides). `reason` is the row's status reason (except when
    sent), the attempt's detail and the event's reason."""

    notification_id: int
    attempt_id: int
    status: OutcomeStatus
    at: datetime
    reason: str
    attempt_outcome: AttemptOutcome
    provider_id: str | None = None
    segments: int | None = None
    error_code: int | None = None
    due_at: datetime | None = None


async def record_outcomes(conn: Executor, outcomes: Sequence[SendOutcome]) -> set[int]:
    """Each call's outcome, in one statement for all those given (the writer flushes what has
    returned meanwhile; no outcome waits for another call): the attempt finished, with the
    database's clock as `recorded_at`; the row moved to the outcome's status and an event logged
    when the row is still at this attempt ('sending', or 'unknown' if a sweep rescued it while
    the answer was on its way: the answer is better than a guess) and no later attempt began. A
    row a status callback already moved on (delivered) keeps its status and gains what the call
    returned. An erased patient's address leaves the row once its outcome is known. Returns the
    ids of the rows moved."""
    rows = await conn.fetch(
        f"""
        WITH v AS (
            SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[],
                                 $5::text[], $6::text[], $7::text[], $8::int[], $9::int[],
                                 $10::timestamptz[])
                AS v(id, attempt_id, status, at, reason, attempt_outcome, provider_id,
                     segments, error_code, due_at)
        ), current AS (
            SELECT v.id FROM v
            WHERE NOT EXISTS (SELECT 1 FROM notification_attempt later
                              WHERE later.notification_id = v.id AND later.id > v.attempt_id)
        ), moved AS (
            UPDATE notification SET
                status = v.status,
                provider_id = CASE WHEN v.status = 'sent' THEN v.provider_id
                                   ELSE notification.provider_id END,
                segments = CASE WHEN v.status = 'sent' THEN v.segments
                                ELSE notification.segments END,
                sent_at = CASE WHEN v.status = 'sent' THEN v.at ELSE notification.sent_at END,
                due_at = CASE WHEN v.status = 'scheduled' THEN v.due_at
                              ELSE notification.due_at END,
                error_code = CASE WHEN v.status = 'unknown' THEN notification.error_code
                                  ELSE v.error_code END,
                status_reason = CASE WHEN v.status = 'sent' THEN NULL ELSE v.reason END,
                lease_until = NULL,
                leased_by = CASE WHEN v.status = 'scheduled' THEN NULL
                                 ELSE notification.leased_by END,
                context = CASE WHEN v.status IN ('sent', 'scheduled')
                               THEN notification.context - 'sender_slot'
                               ELSE notification.context END
                          - CASE WHEN v.status = 'scheduled' THEN '{{}}'::text[]
                                 ELSE {ERASED_PATIENT_KEYS} END,
                updated_at = v.at
            FROM v JOIN current USING (id)
            WHERE notification.id = v.id AND notification.status IN ('sending', 'unknown')
            RETURNING notification.id, v.status AS to_status
        ), already_on AS (
            UPDATE notification SET
                provider_id = coalesce(notification.provider_id, v.provider_id),
                segments = coalesce(notification.segments, v.segments)
            FROM v JOIN current USING (id)
            WHERE notification.id = v.id AND v.status = 'sent'
              AND notification.status IN ('delivered', 'undelivered', 'failed')
        ), finished AS (
            UPDATE notification_attempt a SET finished_at = v.at, outcome = v.attempt_outcome,
                   error_code = v.error_code, detail = v.reason, provider_id = v.provider_id,
                   recorded_at = clock_timestamp()
            FROM v WHERE a.id = v.attempt_id
        ), events AS (
            INSERT INTO notification_event (notification_id, at, from_status, to_status, reason)
            SELECT v.id, v.at, 'sending', v.status, v.reason FROM v JOIN moved USING (id)
        )
        SELECT id FROM moved
        """,  # noqa: S608 - a constant fragment
        [o.notification_id for o in outcomes],
        [o.attempt_id for o in outcomes],
        [o.status for o in outcomes],
        [o.at for o in outcomes],
        [o.reason for o in outcomes],
        [o.attempt_outcome for o in outcomes],
        [o.provider_id for o in outcomes],
        [o.segments for o in outcomes],
        [o.error_code for o in outcomes],
        [o.due_at for o in outcomes],
    )
    return {r["id"] for r in rows}
