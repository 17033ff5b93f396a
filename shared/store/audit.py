"""The append-only audit log (owner of `audit_log`): every write, and every read of a patient
record, with who did it. The table refuses UPDATE and DELETE."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

ActorKind = Literal["staff", "patient", "system"]


@dataclass(frozen=True)
class Actor:
    kind: ActorKind
    id: int | None
    name: str

    @property
    def label(self) -> str:
        """How state-change history names this actor."""
        return f"{self.kind}:{self.id}" if self.id is not None else f"{self.kind}:{self.name}"


SYSTEM = Actor("system", None, "regimen")


async def record(
    db: asyncpg.Connection | asyncpg.Pool,
    *,
    at: datetime,
    actor: Actor,
    action: str,
    entity: str,
    entity_id: int | None,
    patient_id: int | None = None,
    reason: str = "",
    details: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> None:
    await db.execute(
        """
        INSERT INTO audit_log (at, actor_kind, actor_id, actor_name, action, entity, entity_id,
                               patient_id, reason, details, request_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        """,
        at,
        actor.kind,
        actor.id,
        actor.name,
        action,
        entity,
        entity_id,
        patient_id,
        reason,
        details or {},
        request_id,
    )


async def search(
    db: asyncpg.Connection | asyncpg.Pool,
    *,
    patient_id: int | None,
    entity: str | None,
    entity_id: int | None,
    action: str | None,
    since: datetime | None,
    until: datetime | None,
    before_id: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Newest first, keyset-paginated on id; every filter is optional."""
    rows = await db.fetch(
        """
        SELECT id, at, actor_kind, actor_id, actor_name, action, entity, entity_id, patient_id,
               reason, details, request_id
        FROM audit_log
        WHERE ($1::bigint IS NULL OR patient_id = $1)
          AND ($2::text IS NULL OR entity = $2)
          AND ($3::bigint IS NULL OR entity_id = $3)
          AND ($4::text IS NULL OR action = $4)
          AND ($5::timestamptz IS NULL OR at >= $5)
          AND ($6::timestamptz IS NULL OR at < $6)
          AND ($7::bigint IS NULL OR id < $7)
        ORDER BY id DESC
        LIMIT $8
        """,
        patient_id,
        entity,
        entity_id,
        action,
        since,
        until,
        before_id,
        limit,
    )
    return [dict(r) for r in rows]


async def for_patient(
    db: asyncpg.Connection | asyncpg.Pool, patient_id: int
) -> list[dict[str, Any]]:
    """Every entry about a patient, oldest first (an access request shows them all)."""
    rows = await db.fetch(
        """
        SELECT id, at, actor_kind, actor_id, actor_name, action, entity, entity_id, patient_id,
               reason, details, request_id
        FROM audit_log WHERE patient_id = $1 ORDER BY id
        """,
        patient_id,
    )
    return [dict(r) for r in rows]
