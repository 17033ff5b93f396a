"""The staff inbox (owner of `inbox_item`): patients' replies a person must read.

Invariants: one item per inbound message at most (`inbound_message_id` is unique, so a webhook
delivered twice files one item); an item is open until staff mark it handled, with who did it
and a note; urgent items (words that signal danger) are listed before the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from shared.store import Executor, affected

InboxReason = Literal["free_text", "unknown_number", "several_patients", "nothing_asked"]
INBOX_REASONS: tuple[InboxReason, ...] = (
    "free_text",
    "unknown_number",
    "several_patients",
    "nothing_asked",
)


@dataclass(frozen=True)
class InboxItem:
    """One `inbox_item` with the message it files (text, number, when it came)."""

    id: int
    clinic_id: int | None
    patient_id: int | None
    inbound_message_id: int
    reason: InboxReason
    urgent: bool
    danger_words: list[str]
    created_at: datetime
    handled_at: datetime | None
    handled_by: str | None
    note: str | None
    from_number: str
    body: str
    received_at: datetime


_SELECT = """
    SELECT i.id, i.clinic_id, i.patient_id, i.inbound_message_id, i.reason, i.urgent,
           i.danger_words, i.created_at, i.handled_at, i.handled_by, i.note,
           m.from_number, m.body, m.received_at
    FROM inbox_item i JOIN inbound_message m ON m.id = i.inbound_message_id
"""


def _item(row: asyncpg.Record) -> InboxItem:
    data = dict(row)
    data["danger_words"] = list(data["danger_words"])
    return InboxItem(**data)


async def insert(
    db: Executor,
    *,
    clinic_id: int | None,
    patient_id: int | None,
    inbound_message_id: int,
    reason: InboxReason,
    danger_words: Sequence[str],
    now: datetime,
) -> int:
    """File a message; urgent when it has words that signal danger."""
    value = await db.fetchval(
        """
        INSERT INTO inbox_item (clinic_id, patient_id, inbound_message_id, reason, urgent,
                                danger_words, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        RETURNING id
        """,
        clinic_id,
        patient_id,
        inbound_message_id,
        reason,
        bool(danger_words),
        list(danger_words),
        now,
    )
    return int(value)


async def get(db: Executor, item_id: int) -> InboxItem | None:
    row = await db.fetchrow(_SELECT + " WHERE i.id = $1", item_id)
    return None if row is None else _item(row)


async def lock(db: Executor, item_id: int) -> InboxItem | None:
    row = await db.fetchrow(_SELECT + " WHERE i.id = $1 FOR UPDATE OF i", item_id)
    return None if row is None else _item(row)


async def list_page(
    db: Executor,
    *,
    clinic_id: int | None,
    open_only: bool,
    urgent_only: bool,
    after: tuple[bool, datetime, int] | None,
    limit: int,
    handled_only: bool = False,
) -> list[InboxItem]:
    """Items, urgent first, then oldest first (the order they should be read in), after the
    item whose (urgent, created_at, id) is `after`. With `clinic_id`, that clinic's items and
    those from numbers nobody's record has (every clinic may be the one they wrote to)."""
    rows = await db.fetch(
        _SELECT
        + """
        WHERE ($1::bigint IS NULL OR i.clinic_id = $1 OR i.clinic_id IS NULL)
          AND (NOT $2 OR i.handled_at IS NULL)
          AND (NOT $3 OR i.urgent)
          AND (NOT $8 OR i.handled_at IS NOT NULL)
          AND ($4::boolean IS NULL
               OR (NOT i.urgent, i.created_at, i.id) > (NOT $4, $5::timestamptz, $6::bigint))
        ORDER BY NOT i.urgent, i.created_at, i.id
        LIMIT $7
        """,
        clinic_id,
        open_only,
        urgent_only,
        after[0] if after else None,
        after[1] if after else None,
        after[2] if after else None,
        limit,
        handled_only,
    )
    return [_item(r) for r in rows]


async def mark_handled(
    db: Executor, item_id: int, *, by: str, note: str, now: datetime
) -> InboxItem | None:
    """Close an open item with who handled it and how; None if it is not open."""
    row = await db.fetchrow(
        """
        UPDATE inbox_item SET handled_at = $2, handled_by = $3, note = $4
        WHERE id = $1 AND handled_at IS NULL
        RETURNING id
        """,
        item_id,
        now,
        by,
        note,
    )
    return None if row is None else await get(db, item_id)


async def open_for_patient(db: Executor, patient_id: int) -> list[InboxItem]:
    rows = await db.fetch(
        _SELECT + " WHERE i.patient_id = $1 AND i.handled_at IS NULL ORDER BY i.created_at, i.id",
        patient_id,
    )
    return [_item(r) for r in rows]


# -- Staff work queues (queues branch) -------------------------------------------------------------


@dataclass(frozen=True)
class InboundContext:
    """What a reply to an item needs of the message it files: where it came from and to, and
    the clinic the reply handler matched it to (None when nobody's record has the number)."""

    clinic_id: int | None
    to_number: str


async def inbound_context(db: Executor, item_id: int) -> InboundContext | None:
    row = await db.fetchrow(
        """
        SELECT m.clinic_id, m.to_number
        FROM inbox_item i JOIN inbound_message m ON m.id = i.inbound_message_id
        WHERE i.id = $1
        """,
        item_id,
    )
    return None if row is None else InboundContext(row["clinic_id"], row["to_number"])


async def open_counts(db: Executor, patient_ids: Sequence[int]) -> dict[int, int]:
    """patient id → open items, for those of `patient_ids` with any."""
    rows = await db.fetch(
        """
        SELECT patient_id, count(*) AS open FROM inbox_item
        WHERE patient_id = ANY($1::bigint[]) AND handled_at IS NULL
        GROUP BY patient_id
        """,
        list(patient_ids),
    )
    return {row["patient_id"]: int(row["open"]) for row in rows}


async def scrub_for_patient(db: Executor, patient_id: int, *, now: datetime) -> int:
    """Erasure: staff notes on the patient's items are blanked (they may quote the patient)
    and open items are closed as erased; how many items. The items stay, as the record that a
    message came and was dealt with (its text is blanked with the inbound message)."""
    result = await db.execute(
        """
        UPDATE inbox_item
        SET note = CASE WHEN note IS NULL AND handled_at IS NOT NULL THEN NULL
                        ELSE 'patient erased' END,
            handled_at = coalesce(handled_at, $2),
            handled_by = coalesce(handled_by, 'regimen (erasure)')
        WHERE patient_id = $1
        """,
        patient_id,
        now,
    )
    return affected(result)


async def for_patient(db: Executor, patient_id: int) -> list[InboxItem]:
    """Every item linked to the patient, open or handled, oldest first (access requests)."""
    rows = await db.fetch(
        _SELECT + " WHERE i.patient_id = $1 ORDER BY i.created_at, i.id", patient_id
    )
    return [_item(r) for r in rows]
