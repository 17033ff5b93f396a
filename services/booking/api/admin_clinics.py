"""Clinic setup: the clinic's identity, time zone, quiet hours and booking policies.

Roles: every staff role reads clinics (front desk and clinicians need the policies and the time
zone to do their job); only `admin` creates a clinic or changes its settings, because policies
(minimum notice, cancellation notice...) are the clinic's commercial and clinical decisions.

Field types are in `fields`, the list's page and cursor in `pagination`, the concurrency answers
and audit helpers every admin setup module shares in `common`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from services.booking.api import API
from services.booking.api.common import (
    ADMIN,
    ALL_STAFF,
    as_dict,
    fields_of,
    later_than,
    or_not_found,
    record_item,
    update_versioned,
    write,
)
from services.booking.api.fields import (
    Body,
    LocalTime,
    Name,
    Phone,
    ShortText,
    StoredName,
    TimeZone,
    optional,
)
from services.booking.api.framework import Ctx, invalid
from services.booking.api.pagination import Page, PageQuery
from shared.domain import screening
from shared.domain.contact import is_sms_country
from shared.store import clinics
from shared.store.clinics import ClinicSettings, sms_countries_of

Region = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z]{2}$"),
    Field(description="ISO 3166 country code: the default region for phone numbers"),
]


def _texted_country(code: str) -> str:
    if not is_sms_country(code):
        raise ValueError("is not a country with phone numbers of its own (ISO 3166, e.g. GB)")
    return code


def _no_repeats(codes: list[str]) -> list[str]:
    if len(set(codes)) != len(codes):
        raise ValueError("names a country twice")
    return codes


SmsCountry = Annotated[
    str, StringConstraints(pattern=r"^[A-Z]{2}$"), AfterValidator(_texted_country)
]
SmsCountries = Annotated[
    list[SmsCountry],
    Field(
        min_length=1,
        max_length=300,
        description=(
            "the countries (ISO 3166 codes) whose mobiles the clinic sends SMS to; a mobile "
            "from anywhere else is refused wherever one is typed, which keeps form spam from "
            "running up the SMS bill. null: only the clinic's region (and it follows the region)"
        ),
        examples=[["GB", "GG", "JE", "IM"]],
    ),
    AfterValidator(_no_repeats),
]
Colour = Annotated[
    str, StringConstraints(pattern=r"^#[0-9a-fA-F]{6}$"), Field(examples=["#1f5f8b"])
]

# -- Clinics ---------------------------------------------------------------------------------------

MinNotice = Annotated[int, Field(ge=0, le=60 * 24 * 30, description="minutes")]
HorizonDays = Annotated[int, Field(ge=1, le=730, description="days ahead patients may book")]
CancellationNotice = Annotated[int, Field(ge=0, le=24 * 30, description="hours")]
HoldMinutes = Annotated[int, Field(ge=1, le=120, description="minutes a hold keeps a slot")]
NoShowGrace = Annotated[int, Field(ge=0, le=24 * 60, description="minutes after the end")]
SlotStep = Annotated[int, Field(ge=5, le=120, description="minutes between offered starts")]
UnconfirmedCall = Annotated[
    int,
    Field(
        ge=1,
        le=71,
        description=(
            "hours before the start: a session whose patient was asked to confirm (the 72 h "
            "reminder) and has not confirmed by then goes on the staff call list"
        ),
    ),
]


class Clinic(BaseModel):
    id: int
    name: StoredName
    time_zone: TimeZone
    phone: Phone
    address: ShortText
    region: Region
    brand_colour: Colour
    quiet_start: LocalTime = Field(description="scheduled messages go out from this local time")
    quiet_end: LocalTime = Field(description="... until this local time")
    min_notice_minutes: MinNotice
    horizon_days: HorizonDays
    cancellation_notice_hours: CancellationNotice
    hold_minutes: HoldMinutes
    no_show_grace_minutes: NoShowGrace
    slot_step_minutes: SlotStep
    unconfirmed_call_hours: UnconfirmedCall
    sms_countries: list[str] = Field(
        description="the countries whose mobiles the clinic texts (its region unless set)"
    )
    version: int
    created_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _countries_texted(cls, row: Any) -> Any:
        # The column holds NULL until an admin chooses: the clinic's own region.
        if isinstance(row, Mapping) and "region" in row:
            return {
                **row,
                "sms_countries": list(sms_countries_of(row.get("sms_countries"), row["region"])),
            }
        return row


class ClinicCreate(Body):
    """A new clinic; every policy starts at the clinical defaults unless given."""

    name: Name
    time_zone: TimeZone
    phone: Phone
    address: ShortText = ""
    region: Region = "GB"
    brand_colour: Colour = "#1f5f8b"
    # String defaults (parsed like input) so that the schema shows them as HH:MM.
    quiet_start: LocalTime = Field("08:00", validate_default=True)
    quiet_end: LocalTime = Field("20:00", validate_default=True)
    min_notice_minutes: MinNotice = 120
    horizon_days: HorizonDays = 180
    cancellation_notice_hours: CancellationNotice = 24
    hold_minutes: HoldMinutes = 10
    no_show_grace_minutes: NoShowGrace = 30
    slot_step_minutes: SlotStep = 15
    unconfirmed_call_hours: UnconfirmedCall = 48
    sms_countries: SmsCountries | None = None

    _quiet_end_after_start = field_validator("quiet_end")(later_than("quiet_start"))


class ClinicPatch(Body):
    """Only the fields sent change."""

    name: Name = optional()
    time_zone: TimeZone = optional()
    phone: Phone = optional()
    address: ShortText = optional()
    region: Region = optional()
    brand_colour: Colour = optional()
    quiet_start: LocalTime = optional()
    quiet_end: LocalTime = optional()
    min_notice_minutes: MinNotice = optional()
    horizon_days: HorizonDays = optional()
    cancellation_notice_hours: CancellationNotice = optional()
    hold_minutes: HoldMinutes = optional()
    no_show_grace_minutes: NoShowGrace = optional()
    slot_step_minutes: SlotStep = optional()
    unconfirmed_call_hours: UnconfirmedCall = optional()
    sms_countries: SmsCountries | None = optional()


def _clinic_out(row: clinics.Clinic) -> Clinic:
    return Clinic.model_validate(as_dict(row))


async def _locked_clinic(conn: asyncpg.Connection, clinic_id: int) -> clinics.Clinic:
    return or_not_found(await clinics.lock(conn, clinic_id), "clinic", clinic_id)


@API.route(
    "GET",
    "/api/v1/clinics",
    summary="List clinics",
    tag="clinics",
    roles=ALL_STAFF,
    query=PageQuery,
    response=Page[Clinic],
)
async def list_clinics(ctx: Ctx) -> Page[Clinic]:
    query: PageQuery = ctx.query
    rows = await clinics.list_page(ctx.pool, after_id=query.after_id(), limit=query.fetch)
    return Page[Clinic].of(rows, query.limit, _clinic_out)


@API.route(
    "POST",
    "/api/v1/clinics",
    summary="Create a clinic",
    tag="clinics",
    roles=ADMIN,
    body=ClinicCreate,
    response=Clinic,
    status=201,
    location="/api/v1/clinics/{id}",
)
async def create_clinic(ctx: Ctx) -> Clinic:
    body: ClinicCreate = ctx.body

    async def work(conn: asyncpg.Connection) -> Any:
        settings = fields_of(ClinicSettings, body.model_dump())
        created = _clinic_out(await clinics.insert(conn, settings, now=ctx.now))
        # The screening questions of clinical-defaults.md, ready to edit.
        await screening.seed_defaults(conn, created.id, now=ctx.now)
        await record_item(conn, ctx, "create", "clinic", created.id, created)
        return created

    created = await write(ctx, work)
    return created


@API.route(
    "GET",
    "/api/v1/clinics/{clinic_id}",
    summary="One clinic with its policies",
    tag="clinics",
    roles=ALL_STAFF,
    response=Clinic,
    errors=(404,),
)
async def get_clinic(ctx: Ctx) -> Clinic:
    clinic_id = ctx.path["clinic_id"]
    return _clinic_out(or_not_found(await clinics.get(ctx.pool, clinic_id), "clinic", clinic_id))


@API.route(
    "PATCH",
    "/api/v1/clinics/{clinic_id}",
    summary="Change a clinic's settings or policies",
    tag="clinics",
    roles=ADMIN,
    body=ClinicPatch,
    response=Clinic,
    errors=(404, 409, 412, 428),
)
async def update_clinic(ctx: Ctx) -> Clinic:
    """Send If-Match with the ETag last read; a stale one is a 412 with the current version."""
    clinic_id = ctx.path["clinic_id"]
    sent = ctx.body.model_dump(exclude_unset=True)

    async def write(conn: asyncpg.Connection, row: clinics.Clinic) -> clinics.Clinic | None:
        merged = {**as_dict(row), **sent}
        if merged["quiet_end"] <= merged["quiet_start"]:
            path = "quiet_end" if "quiet_end" in sent else "quiet_start"
            raise invalid(path, "quiet_end must be after quiet_start")
        settings = fields_of(ClinicSettings, merged)
        return await clinics.update(
            conn, clinic_id, expected_version=row.version, settings=settings
        )

    return await update_versioned(
        ctx,
        entity="clinic",
        ident=clinic_id,
        changed=bool(sent),
        lock=_locked_clinic,
        view=_clinic_out,
        store=write,
    )
