"""Searching the audit log: who did what, to which record, when.

Roles: `admin` only. The log names patients and staff side by side and shows every read of a
patient record, so it is itself sensitive; front desk and clinicians have no need to browse it.

Newest first, keyset-paginated on the entry id: `next_cursor` stays valid while new entries are
written, so paging never skips or repeats an entry.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, StringConstraints

from services.booking.api import API
from services.booking.api.common import ADMIN, check_span
from services.booking.api.fields import Id, Instant, optional
from services.booking.api.framework import Ctx
from services.booking.api.pagination import Page, PageQuery
from shared.store import audit

Word = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")]


class AuditQuery(PageQuery):
    patient_id: Id = optional(description="entries about this patient")
    entity: Word = optional(description="e.g. clinic, practitioner, treatment, patient")
    entity_id: Id = optional()
    action: Word = optional(description="e.g. create, update, delete, hours.replace")
    since: Instant = optional(description="entries at or after this instant")
    until: Instant = optional(description="entries before this instant")


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor_kind: Literal["staff", "patient", "system"]
    actor_id: int | None
    actor_name: str
    action: str
    entity: str
    entity_id: int | None
    patient_id: int | None
    reason: str
    details: dict[str, Any]
    request_id: str | None


@API.route(
    "GET",
    "/api/v1/audit",
    summary="Search the audit log, newest first",
    tag="audit",
    roles=ADMIN,
    query=AuditQuery,
    response=Page[AuditEntry],
)
async def search_audit(ctx: Ctx) -> Page[AuditEntry]:
    """Every filter is optional and they combine with AND."""
    query: AuditQuery = ctx.query
    check_span(query.since, query.until)
    rows = await audit.list_page(
        ctx.pool,
        patient_id=query.patient_id,
        entity=query.entity,
        entity_id=query.entity_id,
        action=query.action,
        since=query.since,
        until=query.until,
        before_id=query.after_id(),  # newest first: the page continues below this id
        limit=query.fetch,
    )
    return Page[AuditEntry].of(
        rows, query.limit, lambda row: AuditEntry.model_validate(asdict(row))
    )
