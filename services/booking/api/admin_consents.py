"""A patient's consents in the admin API: the history of every change, and recording one given
or withdrawn (source `staff`). Who may do which is in the table of `admin_patients`. Like every
access to the record, a read is audited (`patient.read`, `details.view` "consents") and so is a
change (`patient.consent`), in the same transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import asyncpg
from aiohttp import web
from pydantic import BaseModel, Field, StrictBool, StringConstraints

from services.booking.api import API, idempotency
from services.booking.api.admin_patients import (
    BASE,
    TAG,
    ConsentOut,
    audit_patient,
    erased_conflict,
    existing_patient,
)
from services.booking.api.common import ALL_STAFF, DESK, or_not_found
from services.booking.api.fields import Body
from services.booking.api.framework import Ctx
from services.booking.api.pagination import Page, PageQuery
from shared import outbox_plan
from shared.db.transactions import in_transaction
from shared.store import consents as consent_store
from shared.store import patients
from shared.store.consents import Consent, ConsentKind

WordingVersion = Annotated[
    str, StringConstraints(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]


class ConsentChange(Body):
    kind: ConsentKind
    granted: StrictBool
    wording_version: WordingVersion = Field(
        description="the version of the wording the patient agreed to or withdrew from"
    )


def _consent_out(consent: Consent) -> ConsentOut:
    return ConsentOut.model_validate(consent, from_attributes=True)


@API.route(
    "GET",
    BASE + "/{patient_id}/consents",
    summary="A patient's consent history",
    tag=TAG,
    roles=ALL_STAFF,
    query=PageQuery,
    response=Page[ConsentOut],
)
async def list_consents(ctx: Ctx) -> Page[ConsentOut]:
    """Every change, oldest first; the newest of a kind is the current one. Audited as
    `patient.read`."""
    query: PageQuery = ctx.query
    patient_id = ctx.path["patient_id"]
    after = query.after(datetime, int)

    async def work(conn: asyncpg.Connection) -> Any:
        await existing_patient(conn, patient_id)
        history = await consent_store.list_page(
            conn, patient_id, after=(after[0], after[1]) if after else None, limit=query.fetch
        )
        await audit_patient(conn, ctx, "patient.read", patient_id, details={"view": "consents"})
        return history

    history = await in_transaction(ctx.pool, work)
    return Page[ConsentOut].of(
        history, query.limit, lambda entry: _consent_out(entry[1]), _consent_key
    )


def _consent_key(entry: tuple[int, Consent]) -> tuple[datetime, int]:
    ident, consent = entry
    return consent.recorded_at, ident


@API.route(
    "POST",
    BASE + "/{patient_id}/consents",
    summary="Record a consent given or withdrawn",
    tag=TAG,
    roles=DESK,
    body=ConsentChange,
    response=ConsentOut,
    status=201,
    errors=(409,),
)
async def record_consent(ctx: Ctx) -> BaseModel | web.Response:
    """Appended with source `staff`; earlier entries never change. A withdrawal is always
    accepted; a grant for an erased patient is refused (409). With an Idempotency-Key a retry
    gets the first answer instead of a second entry. A care consent moves the reminders already
    planned to the channel now allowed (SMS first, else email, else none: scheduled ones on the
    other channel are cancelled with the reason), in the same transaction; the audit row lists
    the messages cancelled and planned. Booking confirmations and notices are not affected."""
    body: ConsentChange = ctx.body
    patient_id = ctx.path["patient_id"]

    async def work(conn: asyncpg.Connection) -> ConsentOut:
        # Locked before the consent row is written: two changes at once queue here instead of
        # deadlocking in the re-planning of reminders (which locks the patient too).
        patient = or_not_found(await patients.lock(conn, patient_id), "patient", patient_id)
        if body.granted and patient.erased_at is not None:
            raise erased_conflict(
                patient, "the patient's contact data was erased; nothing can be granted"
            )
        await consent_store.insert(
            conn,
            patient_id,
            kind=body.kind,
            granted=body.granted,
            source="staff",
            wording_version=body.wording_version,
            now=ctx.now,
        )
        details: dict[str, Any] = body.model_dump()
        if body.kind in consent_store.CARE_KINDS:
            replanned = await outbox_plan.on_consents_changed(conn, patient_id, now=ctx.now)
            details["reminders"] = replanned.summary()
        await audit_patient(conn, ctx, "patient.consent", patient_id, details=details)
        return ConsentOut(
            kind=body.kind,
            granted=body.granted,
            source="staff",
            wording_version=body.wording_version,
            recorded_at=ctx.now,
        )

    return await idempotency.run(ctx, work, status=201)
