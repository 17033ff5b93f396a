"""Staff alerts in the admin API: open alerts (emergency and urgent patient reports nobody has
acknowledged yet), one alert with every message it sent, and acknowledging one.

Roles: every staff role reads and acknowledges (whoever picks up the phone first stops the
escalation); who and when are recorded on the alert and in the audit log
(`staff_alert.acknowledge`). A list or a read is audited as `staff_alert.read` for the
patients it shows.

`status=open` (default) lists open and exhausted alerts (exhausted: nobody on the escalation
list acknowledged; the admins were told); `acknowledged` or `all` the others. `reached_anyone`
is false for an alert no message was planned for (nobody to alert is configured): the scheduler's
`regimen_staff_alerts_unrouted` gauge counts those.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import asyncpg
from pydantic import BaseModel, Field

from services.booking.api import API
from services.booking.api.common import ALL_STAFF, Read, or_not_found, record_reads
from services.booking.api.fields import Body, Id, text
from services.booking.api.framework import ApiError, Ctx
from services.booking.api.pagination import Page, PageQuery
from shared.db.transactions import in_transaction
from shared.domain import alerts
from shared.store import staff_alerts
from shared.store.staff_alerts import StaffAlert

TAG = "alerts"

AlertFilter = Literal["open", "acknowledged", "all"]
_STATUSES: dict[str, list[str]] = {
    "open": ["open", "exhausted"],
    "acknowledged": ["acknowledged"],
    "all": ["open", "exhausted", "acknowledged"],
}


class AlertMessage(BaseModel):
    member_id: int | None
    purpose: Literal["alert", "exhausted"]
    channel: Literal["sms", "email"]
    notification_id: int = Field(description="the outbox row (see the messages API)")
    at: datetime
    status: str = Field(description="the outbox row's status now")


class AlertOut(BaseModel):
    id: int
    clinic_id: int
    tier: Literal["emergency", "urgent"]
    status: Literal["open", "acknowledged", "exhausted"]
    patient_id: int | None
    adverse_event_id: int | None
    inbox_item_id: int | None
    summary: str
    raised_at: datetime
    callback_due_at: datetime | None = Field(description="urgent: call the patient back by then")
    step: int = Field(description="escalation list position reached; -1: the on-call rota")
    recipient_member_id: int | None
    notified_at: datetime | None
    escalate_at: datetime | None = Field(description="when it goes to the next person")
    exhausted_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    acknowledge_note: str | None
    reached_anyone: bool
    messages: list[AlertMessage]


class AlertQuery(PageQuery):
    clinic_id: Id | None = None
    status: AlertFilter = Field(
        "open", description="open (default: open or exhausted), acknowledged or all"
    )


Note = text(1000, description="what was done (optional)")


class AcknowledgeBody(Body):
    note: Note | None = None


async def _out(db: asyncpg.Connection | asyncpg.Pool, alert: StaffAlert) -> AlertOut:
    sent = await staff_alerts.notifications_of(db, alert.id)
    statuses = (
        dict(
            await db.fetch(
                "SELECT id, status FROM notification WHERE id = ANY($1::bigint[])",
                [s.notification_id for s in sent],
            )
        )
        if sent
        else {}
    )
    return AlertOut(
        **{k: getattr(alert, k) for k in AlertOut.model_fields if hasattr(alert, k)},
        reached_anyone=bool(sent),
        messages=[
            AlertMessage(
                member_id=s.member_id,
                purpose=s.purpose,
                channel=s.channel,
                notification_id=s.notification_id,
                at=s.at,
                status=str(statuses.get(s.notification_id, "unknown")),
            )
            for s in sent
        ],
    )


def _reads(shown: list[StaffAlert]) -> list[Read]:
    return [Read(a.id, a.patient_id, {"tier": a.tier}) for a in shown if a.patient_id is not None]


@API.route(
    "GET",
    "/api/v1/alerts",
    summary="Staff alerts: open ones by default",
    tag=TAG,
    roles=ALL_STAFF,
    query=AlertQuery,
    response=Page[AlertOut],
)
async def list_alerts(ctx: Ctx) -> Page[AlertOut]:
    query: AlertQuery = ctx.query
    found = await staff_alerts.list_page(
        ctx.pool,
        clinic_id=query.clinic_id,
        statuses=_STATUSES[query.status],
        after_id=query.after_id(),
        limit=query.fetch,
    )
    await record_reads(
        ctx, action="staff_alert.read", entity="staff_alert", reads=_reads(found[: query.limit])
    )
    items = [await _out(ctx.pool, a) for a in found]
    return Page[AlertOut].of(items, query.limit)


@API.route(
    "GET",
    "/api/v1/alerts/{alert_id}",
    summary="One staff alert, with every message it sent",
    tag=TAG,
    roles=ALL_STAFF,
    response=AlertOut,
    errors=(404,),
)
async def get_alert(ctx: Ctx) -> AlertOut:
    alert_id = ctx.path["alert_id"]
    alert = or_not_found(await staff_alerts.get(ctx.pool, alert_id), "alert", alert_id)
    await record_reads(ctx, action="staff_alert.read", entity="staff_alert", reads=_reads([alert]))
    return await _out(ctx.pool, alert)


@API.route(
    "POST",
    "/api/v1/alerts/{alert_id}/acknowledge",
    summary="Acknowledge an alert: stops its escalation",
    tag=TAG,
    roles=ALL_STAFF,
    body=AcknowledgeBody,
    response=AlertOut,
    errors=(404, 409),
)
async def acknowledge_alert(ctx: Ctx) -> AlertOut:
    """409 `already-acknowledged` when someone acknowledged it first (the answer names who).
    Audited as `staff_alert.acknowledge`."""
    body: AcknowledgeBody = ctx.body
    alert_id = ctx.path["alert_id"]

    async def work(conn: asyncpg.Connection) -> AlertOut:
        current = or_not_found(await staff_alerts.get(conn, alert_id), "alert", alert_id)
        done = await alerts.acknowledge(
            conn, alert_id, actor=ctx.actor, note=body.note, now=ctx.now
        )
        if done is None:
            latest = await staff_alerts.get(conn, alert_id) or current
            raise ApiError(
                409,
                "Conflict",
                f"alert {alert_id} was acknowledged by {latest.acknowledged_by}",
                type_="already-acknowledged",
                acknowledged_by=latest.acknowledged_by,
            )
        return await _out(conn, done)

    return await in_transaction(ctx.pool, work)
