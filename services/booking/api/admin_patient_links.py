"""Patients' private links, from the staff side: "send a new link".

A patient who lost their link, or whose old messages may be read by someone else (a shared
phone, a forwarded email), rings the clinic. The desk sends a new link: every link issued so far
stops working at once, and the current one goes to the contacts on file (email if there is
one, SMS with care SMS consent). The link itself is never shown to staff: it is the patient's
credential, and a link read out over the phone is a link in someone's notes.

Roles: `admin` and `front_desk` (contact matters are the desk's work). Audited as
`patient.link_renew`.
"""

from __future__ import annotations

from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, Field

from services.booking.api import API
from services.booking.api.common import DESK, or_not_found, record
from services.booking.api.framework import ApiError, Ctx
from shared import outbox_plan
from shared.db.transactions import in_transaction
from shared.store import notifications, patients


class NewLink(BaseModel):
    link_version: int = Field(description="links of older versions no longer open")
    sent_by: list[Literal["sms", "email"]] = Field(
        description="the channels the new link goes by; empty: the patient has no contact we "
        "may use, so give them the clinic's number and update their details first"
    )


@API.route(
    "POST",
    "/api/v1/patients/{patient_id}/new-link",
    summary="Revoke a patient's private links and send them a new one",
    tag="patients",
    roles=DESK,
    response=NewLink,
    errors=(409,),
)
async def send_new_link(ctx: Ctx) -> NewLink:
    """Every link sent before stops working at once; the new one goes to the contacts on file
    within a minute, whatever the hour."""
    patient_id = ctx.path["patient_id"]

    async def work(conn: asyncpg.Connection) -> Any:
        current = or_not_found(await patients.get(conn, patient_id), "patient", patient_id)
        if current.erased_at is not None:
            raise ApiError(
                409,
                "Conflict",
                "the patient was erased: there is nobody to send a link to",
                type_="patient-erased",
            )
        version = await patients.renew_links(conn, patient_id, now=ctx.now)
        assert version is not None  # locked by the update, and not erased
        planned = await outbox_plan.plan_new_link(
            conn, patient_id, now=ctx.now, asked_by_patient=False
        )
        channels = await _channels(conn, planned)
        await record(
            conn,
            ctx,
            action="patient.link_renew",
            entity="patient",
            entity_id=patient_id,
            patient_id=patient_id,
            details={"link_version": version, "sent_by": channels},
        )
        return channels, version

    channels, version = await in_transaction(ctx.pool, work)
    return NewLink(link_version=version, sent_by=channels)


async def _channels(conn: asyncpg.Connection, notification_ids: list[int]) -> list[str]:
    channels = set()
    for notification_id in notification_ids:  # one or two rows
        row = await notifications.rows.get(conn, notification_id)
        if row is not None:
            channels.add(row.channel)
    return sorted(channels)
