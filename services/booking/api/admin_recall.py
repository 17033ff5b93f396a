"""Product recall: every patient and session that received a lot, with whether and how the
clinic can reach each patient, as a JSON list (paginated like every list) and as CSV for a
recall letter or call run. Clinicians and admins only (it shows clinical facts: who received
which product).

The lot number matches exactly after trimming, in any case ("ab-123 " finds "AB-123"); product,
clinic and the sessions' local dates narrow it. Contact status per patient:

* `sms`: a mobile, care SMS consent, and the number has not opted out;
* `email`: an address and care email consent;
* `erased`: the patient's contact data was erased (EU erasure request): the clinic must decide
  how to reach them through other records; neither channel is open.

Both forms write one `patient.read` audit row per patient shown (`details.view: recall`, with
the lot and the sessions), and one `recall.search` row with the lot and how many sessions matched
on the page, in one transaction.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from typing import Annotated
from zoneinfo import ZoneInfo

import asyncpg
from aiohttp import web
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from services.booking.api import API
from services.booking.api.common import CLINICAL, record
from services.booking.api.fields import Day, Id, Query, one_line, optional
from services.booking.api.framework import Ctx, invalid
from services.booking.api.pagination import Page, PageQuery, next_cursor
from shared.db.transactions import in_transaction
from shared.store import session_records
from shared.store.session_records import RecallHit

TAG = "recall"
# The CSV is read in one go for a letter run; past this many sessions, narrow it by dates.
CSV_MAX_ROWS = 20_000

SearchText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(one_line),
]


class RecallFilters(Query):
    # Required (a 422 without it), checked by the handler so that an unknown parameter is
    # reported alone, as on every list.
    lot_number: Annotated[str, StringConstraints(max_length=100)] = optional(
        description="required: the lot number, exact after trimming, any case"
    )
    product: SearchText | None = Field(None, description="exact, any case")
    clinic_id: Id | None = None
    from_: Day | None = Field(None, alias="from", description="first local date of the session")
    to: Day | None = Field(None, description="last local date (inclusive)")


class RecallQuery(PageQuery, RecallFilters):
    pass


class ContactStatus(BaseModel):
    sms: bool = Field(description="mobile present, care SMS consent, not opted out, not erased")
    email: bool = Field(description="address present, care email consent, not erased")
    erased: bool
    sms_opted_out: bool
    mobile: str | None
    email_address: str | None


class RecallItem(BaseModel):
    appointment_id: int
    clinic_id: int
    patient_id: int
    first_name: str
    last_name: str
    session_at: datetime = Field(description="the session's start, UTC")
    local_date: date = Field(description="the session's date in its clinic's zone")
    treatment_name: str
    product: str | None
    lot_number: str
    lot_expiry: date | None
    contact: ContactStatus


def _item(hit: RecallHit) -> RecallItem:
    erased = hit.erased
    return RecallItem(
        appointment_id=hit.appointment_id,
        clinic_id=hit.clinic_id,
        patient_id=hit.patient_id,
        first_name=hit.first_name,
        last_name=hit.last_name,
        session_at=hit.starts_at,
        local_date=hit.starts_at.astimezone(ZoneInfo(hit.time_zone)).date(),
        treatment_name=hit.treatment_name,
        product=hit.product,
        lot_number=hit.lot_number,
        lot_expiry=hit.lot_expiry,
        contact=ContactStatus(
            sms=not erased and hit.mobile is not None and hit.care_sms and not hit.sms_opted_out,
            email=not erased and hit.email is not None and hit.care_email,
            erased=erased,
            sms_opted_out=hit.sms_opted_out,
            mobile=hit.mobile,
            email_address=hit.email,
        ),
    )


def _lot(filters: RecallFilters) -> str:
    lot = (filters.lot_number or "").strip()
    if not lot:
        raise invalid("lot_number", "give the lot number to search for", where="query")
    if filters.from_ and filters.to and filters.to < filters.from_:
        raise invalid("to", "must not be before from", where="query")
    return lot


async def _search(
    ctx: Ctx, filters: RecallFilters, *, after: tuple[datetime, int] | None, limit: int
) -> list[RecallHit]:
    return await session_records.recall_page(
        ctx.pool,
        lot_number=_lot(filters),
        product=filters.product,
        clinic_id=filters.clinic_id,
        first_day=filters.from_,
        last_day=filters.to,
        after=after,
        limit=limit,
    )


async def _audit(ctx: Ctx, lot: str, shown: list[RecallHit], *, form: str) -> None:
    """The search and a read of each patient shown, in one transaction (all or none)."""
    by_patient: dict[int, list[int]] = {}
    for hit in shown:
        by_patient.setdefault(hit.patient_id, []).append(hit.appointment_id)

    async def work(conn: asyncpg.Connection) -> None:
        details = {"lot_number": lot, "form": form, "sessions": len(shown)}
        await record(
            conn,
            ctx,
            action="recall.search",
            entity="session_record",
            entity_id=None,
            details=details,
        )
        for patient_id, ids in by_patient.items():
            await record(
                conn,
                ctx,
                action="patient.read",
                entity="patient",
                entity_id=patient_id,
                patient_id=patient_id,
                details={"view": "recall", "lot_number": lot, "appointment_ids": ids},
            )

    await in_transaction(ctx.pool, work)


def _by_session(hit: RecallHit) -> tuple[datetime, int]:
    return hit.starts_at, hit.appointment_id


@API.route(
    "GET",
    "/api/v1/recall",
    summary="Every patient and session that received a lot, with contact status",
    tag=TAG,
    roles=CLINICAL,
    query=RecallQuery,
    response=Page[RecallItem],
)
async def recall_search(ctx: Ctx) -> Page[RecallItem]:
    """Newest session first. A patient who received the lot at several sessions appears once
    per session. Audited as `patient.read` (view `recall`) per patient shown."""
    query: RecallQuery = ctx.query
    after = query.after(datetime, int)
    found = await _search(
        ctx, query, after=(after[0], after[1]) if after else None, limit=query.fetch
    )
    shown = found[: query.limit]
    await _audit(ctx, _lot(query), shown, form="json")
    return Page[RecallItem](
        items=[_item(hit) for hit in shown],
        next_cursor=next_cursor(found, query.limit, _by_session),
    )


CSV_COLUMNS = [
    "patient_id",
    "first_name",
    "last_name",
    "appointment_id",
    "clinic_id",
    "session_date",
    "treatment",
    "product",
    "lot_number",
    "lot_expiry",
    "reach_by_sms",
    "reach_by_email",
    "erased",
    "sms_opted_out",
    "mobile",
    "email",
]


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: a leading =, +, -, @, tab or CR would make it a
    formula (names and products are typed by people), so such cells start with a quote."""
    text = "" if value is None else str(value)
    if isinstance(value, bool):
        text = "yes" if value else "no"
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


@API.route(
    "GET",
    "/api/v1/recall.csv",
    summary="The recall search as CSV (text/csv), for a recall letter run",
    tag=TAG,
    roles=CLINICAL,
    query=RecallFilters,
    produces="text/csv",
)
async def recall_csv(ctx: Ctx) -> web.Response:
    """The same sessions as `/api/v1/recall`, all of them (up to 20,000: narrow by dates past
    that, 422), one row per session, in text/csv with a header row. Cells that a spreadsheet
    would read as a formula start with a quote ('+447700900123). Audited like the JSON form."""
    filters: RecallFilters = ctx.query
    lot = _lot(filters)
    found = await _search(ctx, filters, after=None, limit=CSV_MAX_ROWS + 1)
    if len(found) > CSV_MAX_ROWS:
        raise invalid(
            "to", f"more than {CSV_MAX_ROWS} sessions: narrow by from and to", where="query"
        )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for hit in found:
        item = _item(hit)
        writer.writerow(
            [
                _cell(v)
                for v in (
                    item.patient_id,
                    item.first_name,
                    item.last_name,
                    item.appointment_id,
                    item.clinic_id,
                    item.local_date.isoformat(),
                    item.treatment_name,
                    item.product,
                    item.lot_number,
                    item.lot_expiry.isoformat() if item.lot_expiry else None,
                    item.contact.sms,
                    item.contact.email,
                    item.contact.erased,
                    item.contact.sms_opted_out,
                    item.contact.mobile,
                    item.contact.email_address,
                )
            ]
        )
    await _audit(ctx, lot, found, form="csv")
    safe_lot = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in lot)[:60]
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="recall-{safe_lot}.csv"'},
    )
