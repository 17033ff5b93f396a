"""Patients' consents to be contacted (owner of `patient_consent`).

Invariants: consents are append-only (the table refuses UPDATE and DELETE): each change is a
new timestamped row with its source and wording version, and the current consent of a kind is
the newest row of that kind. A kind never asked about has no row, and counts as not granted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from shared.store import Executor

ConsentKind = Literal["care_sms", "care_email", "marketing_sms", "marketing_email"]
CONSENT_KINDS: tuple[ConsentKind, ...] = (
    "care_sms",
    "care_email",
    "marketing_sms",
    "marketing_email",
)
MARKETING_KINDS: tuple[ConsentKind, ...] = ("marketing_sms", "marketing_email")
# The consents that decide the channel of reminders (shared/outbox_plan.py).
CARE_KINDS: tuple[ConsentKind, ...] = ("care_sms", "care_email")


@dataclass(frozen=True)
class Consent:
    """One `patient_consent` row (of the patient it belongs to)."""

    kind: ConsentKind
    granted: bool
    source: str
    wording_version: str
    recorded_at: datetime


async def insert(
    conn: Executor,
    patient_id: int,
    *,
    kind: ConsentKind,
    granted: bool,
    source: str,
    wording_version: str,
    now: datetime,
) -> None:
    await conn.execute(
        """
        INSERT INTO patient_consent (patient_id, kind, granted, source, wording_version,
                                     recorded_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        """,
        patient_id,
        kind,
        granted,
        source,
        wording_version,
        now,
    )


async def current(db: Executor, patient_id: int) -> dict[ConsentKind, Consent]:
    """The newest consent row of each kind; a kind never asked about is absent (not granted)."""
    return (await current_many(db, [patient_id])).get(patient_id, {})


async def current_many(
    db: Executor, patient_ids: Sequence[int]
) -> dict[int, dict[ConsentKind, Consent]]:
    """patient id → `current`, in one query (a patient without any is absent)."""
    rows = await db.fetch(
        """
        SELECT DISTINCT ON (patient_id, kind) patient_id, kind, granted, source, wording_version,
               recorded_at
        FROM patient_consent WHERE patient_id = ANY($1::bigint[])
        ORDER BY patient_id, kind, recorded_at DESC, id DESC
        """,
        list(set(patient_ids)),
    )
    found: dict[int, dict[ConsentKind, Consent]] = {}
    for row in rows:
        data = dict(row)
        patient_id = data.pop("patient_id")
        found.setdefault(patient_id, {})[row["kind"]] = Consent(**data)
    return found


async def history(db: Executor, patient_id: int) -> list[Consent]:
    """Every consent row of a patient, oldest first."""
    rows = await db.fetch(
        """
        SELECT kind, granted, source, wording_version, recorded_at
        FROM patient_consent WHERE patient_id = $1 ORDER BY recorded_at, id
        """,
        patient_id,
    )
    return [Consent(**dict(r)) for r in rows]


async def list_page(
    db: Executor, patient_id: int, *, after: tuple[datetime, int] | None, limit: int
) -> list[tuple[int, Consent]]:
    """Up to `limit` entries of `history` with their ids, in the same order, after the
    entry whose (recorded_at, id) is `after` (keyset pagination)."""
    rows = await db.fetch(
        """
        SELECT id, kind, granted, source, wording_version, recorded_at
        FROM patient_consent
        WHERE patient_id = $1
          AND ($2::timestamptz IS NULL OR (recorded_at, id) > ($2, $3::bigint))
        ORDER BY recorded_at, id
        LIMIT $4
        """,
        patient_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [(r["id"], Consent(**{k: v for k, v in dict(r).items() if k != "id"})) for r in rows]
