"""The append-only audit log (owner of `audit_log`): every write, and every read of a patient
record, with who did it.

Invariants: entries are only ever inserted (the table refuses UPDATE, DELETE and TRUNCATE, and
the services' role may only INSERT and SELECT it); an entry is written in the transaction of
the change it records, so both commit or neither does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from shared.store import Executor

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


@dataclass(frozen=True)
class AuditEntry:
    """One `audit_log` row."""

    id: int
    at: datetime
    actor_kind: ActorKind
    actor_id: int | None
    actor_name: str
    action: str
    entity: str
    entity_id: int | None
    patient_id: int | None
    reason: str
    details: dict[str, Any]
    request_id: str | None


_COLUMNS = """id, at, actor_kind, actor_id, actor_name, action, entity, entity_id, patient_id,
    reason, details, request_id"""


async def insert(
    db: Executor,
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
    """One entry: `action` on `entity` `entity_id`, at `at`, by `actor`, about `patient_id`.
    (Keyword arguments rather than an insert object: each of the many callers names what it
    records, and there is nothing to build or pass on.)"""
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


async def list_page(
    db: Executor,
    *,
    patient_id: int | None,
    entity: str | None,
    entity_id: int | None,
    action: str | None,
    since: datetime | None,
    until: datetime | None,
    before_id: int | None,
    limit: int,
) -> list[AuditEntry]:
    """Newest first, keyset-paginated on id; every filter is optional."""
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM audit_log
        WHERE ($1::bigint IS NULL OR patient_id = $1)
          AND ($2::text IS NULL OR entity = $2)
          AND ($3::bigint IS NULL OR entity_id = $3)
          AND ($4::text IS NULL OR action = $4)
          AND ($5::timestamptz IS NULL OR at >= $5)
          AND ($6::timestamptz IS NULL OR at < $6)
          AND ($7::bigint IS NULL OR id < $7)
        ORDER BY id DESC
        LIMIT $8
        """,  # noqa: S608 - constant
        patient_id,
        entity,
        entity_id,
        action,
        since,
        until,
        before_id,
        limit,
    )
    return [AuditEntry(**dict(r)) for r in rows]


async def for_patient(db: Executor, patient_id: int) -> list[AuditEntry]:
    """Every entry about a patient, oldest first (an access request shows them all)."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM audit_log WHERE patient_id = $1 ORDER BY id",  # noqa: S608
        patient_id,
    )
    return [AuditEntry(**dict(r)) for r in rows]
