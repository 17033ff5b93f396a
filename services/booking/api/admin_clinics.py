"""Clinic setup: the clinic's identity, time zone, quiet hours and booking policies.

Roles: every staff role reads clinics (front desk and clinicians need the policies and the time
zone to do their job); only `admin` creates a clinic or changes its settings, because policies
(minimum notice, cancellation notice...) are the clinic's commercial and clinical decisions.

The second half of this module holds the small pieces every admin setup module shares: field
types whose OpenAPI schema says exactly what is accepted, opaque keyset cursors, optimistic
concurrency answers, audit writing and the mapping of database constraint errors to 409/422.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, time
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from services.booking.api import API
from services.booking.api.framework import ApiError, Ctx, invalid, not_found
from shared.store import audit, clinics
from shared.store.clinics import ClinicSettings

ALL_STAFF = ("admin", "front_desk", "clinician")
ADMIN = ("admin",)
SCHEDULERS = ("admin", "front_desk")

MAX_ID = 2**63 - 1  # bigint; a bigger number would overflow in the driver instead of a 404/422

# -- Field types -----------------------------------------------------------------------------------

# PostgreSQL text cannot hold NUL, so it is refused at the door rather than by the database.
NO_NUL = r"^[^\x00]*$"
# At least one visible character, and no NUL anywhere.
NOT_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"

Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NOT_BLANK)]
Phone = Annotated[
    str,
    StringConstraints(pattern=r"^\+[1-9][0-9]{6,14}$"),
    Field(description="E.164, e.g. +442079460000", examples=["+442079460000"]),
]
ShortText = Annotated[str, StringConstraints(max_length=500, pattern=NO_NUL)]
LongText = Annotated[str, StringConstraints(max_length=4000, pattern=NO_NUL)]

_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


def _parse_local_time(value: Any) -> time:
    if isinstance(value, time) and value.tzinfo is None:
        return value  # read back from the database
    if isinstance(value, str) and re.fullmatch(_HHMM, value):
        return time.fromisoformat(value)
    raise ValueError("use a 24-hour local time HH:MM, e.g. 09:30")


LocalTime = Annotated[
    time,
    PlainValidator(_parse_local_time),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": _HHMM, "examples": ["09:30"]}),
]


_LAX_DATETIME = TypeAdapter(datetime)


def _iso_datetime(value: Any) -> Any:
    # Only ISO 8601 text: pydantic alone would also read 0 or "1700000000" as Unix time.
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}", value):
        try:
            return _LAX_DATETIME.validate_python(value)
        except ValidationError:
            raise ValueError("is not a valid date-time") from None
    raise ValueError("use an ISO 8601 date-time with its offset, e.g. 2026-03-10T09:00:00Z")


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside the supported range of dates") from None


Instant = Annotated[AwareDatetime, BeforeValidator(_iso_datetime), AfterValidator(_in_utc)]


def _iso_date(value: Any) -> Any:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError("is not a valid date") from None
    raise ValueError("use an ISO 8601 date, e.g. 2026-03-10")


Day = Annotated[date, BeforeValidator(_iso_date)]


def _known_time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError("is not an IANA time zone, e.g. Europe/London") from None
    return name


TimeZone = Annotated[
    str,
    StringConstraints(max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"),
    AfterValidator(_known_time_zone),
    Field(description="IANA time zone", examples=["Europe/London"]),
]
Region = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z]{2}$"),
    Field(description="ISO 3166 country code: the default region for phone numbers"),
]
Colour = Annotated[
    str, StringConstraints(pattern=r"^#[0-9a-fA-F]{6}$"), Field(examples=["#1f5f8b"])
]


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def optional(**constraints: Any) -> Any:
    """A field that may be left out but, when given, must be valid (null only if its type says
    so). PATCH bodies and query filters use it; `model_dump(exclude_unset=True)` then holds
    exactly what the client sent. The schema shows no `default: null`, which would be a lie."""
    return Field(default=None, json_schema_extra=_no_default, **constraints)


class Body(BaseModel):
    """Request bodies refuse unknown fields, so a typo is a 422 instead of a silent no-op, and
    are strict: JSON has real numbers and booleans, so "5" or 0 standing for 5 or false is a
    client bug worth reporting rather than guessing at."""

    model_config = ConfigDict(extra="forbid", strict=True)


# -- Pagination ------------------------------------------------------------------------------------

Cursor = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,200}$"),
    Field(description="next_cursor from the previous page"),
]


class PageQuery(BaseModel):
    limit: int = Field(50, ge=1, le=200, description="items per page")
    cursor: Cursor = optional()


def encode_cursor(*values: Any) -> str:
    raw = json.dumps(list(values), separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, *kinds: type) -> list[Any] | None:
    """The keyset values a cursor carries (each checked against `kinds`), or a 422."""
    if cursor is None:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list) or len(values) != len(kinds):
            raise ValueError
        return [_cursor_value(value, kind) for value, kind in zip(values, kinds, strict=True)]
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
        raise invalid("cursor", "is not a cursor this list handed out", where="query") from None


def _cursor_value(value: Any, kind: type) -> Any:
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_ID:
            raise ValueError
        return value
    if kind is datetime and isinstance(value, str):
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError
        return moment
    if kind is date and isinstance(value, str):
        return date.fromisoformat(value)
    raise ValueError


# -- Concurrency, audit, database errors -----------------------------------------------------------


def unknown_reference(path: str, what: str, ident: int) -> ApiError:
    """A body naming a record that does not exist: 404 like any unknown id, with the field."""
    return ApiError(
        404,
        "Not Found",
        f"{path}: no {what} with id {ident}",
        type_="not-found",
        errors=[{"in": "body", "path": path, "message": f"no {what} with id {ident}"}],
    )


def stale(what: str, ident: int, current_version: int) -> ApiError:
    return ApiError(
        412,
        "Precondition Failed",
        f"{what} {ident} changed since you read it (it is now at version {current_version}); "
        "reload it and apply your change again",
        type_="stale",
        current_version=current_version,
    )


async def record(
    conn: asyncpg.Connection,
    ctx: Ctx,
    *,
    action: str,
    entity: str,
    entity_id: int | None,
    details: dict[str, Any],
) -> None:
    """The audit row of one write, inside the write's own transaction."""
    await audit.record(
        conn,
        at=ctx.now,
        actor=ctx.actor,
        action=action,
        entity=entity,
        entity_id=entity_id,
        details=details,
        request_id=ctx.request_id,
    )


def changes(before: BaseModel, after: BaseModel) -> dict[str, Any]:
    """{field: {"from": old, "to": new}} for what differs, version aside (for the audit log)."""
    old = before.model_dump(mode="json", exclude={"version"})
    new = after.model_dump(mode="json", exclude={"version"})
    return {k: {"from": old.get(k), "to": v} for k, v in new.items() if old.get(k) != v}


def _constraint_path(error: asyncpg.PostgresError) -> str:
    # Column checks are named <table>_<column>_check; any other check is about the whole body.
    name = getattr(error, "constraint_name", None) or ""
    prefix, suffix = f"{getattr(error, 'table_name', None)}_", "_check"
    if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix + suffix):
        return name[len(prefix) : -len(suffix)]
    return "(root)"


@contextmanager
def database_errors(conflicts: Mapping[str, str] | None = None) -> Iterator[None]:
    """Turn constraint violations into 409/422 answers; `conflicts` maps a constraint name to
    the sentence the client sees. A constraint must never become a 500."""
    conflicts = conflicts or {}
    try:
        yield
    except (asyncpg.UniqueViolationError, asyncpg.ExclusionViolationError) as error:
        detail = conflicts.get(error.constraint_name or "", "this conflicts with existing data")
        raise ApiError(409, "Conflict", detail, type_="conflict") from None
    except asyncpg.ForeignKeyViolationError as error:
        detail = conflicts.get(
            error.constraint_name or "",
            "other records still refer to this, or it refers to something that does not exist",
        )
        raise ApiError(409, "Conflict", detail, type_="conflict") from None
    except (asyncpg.CheckViolationError, asyncpg.NotNullViolationError) as error:
        raise invalid(_constraint_path(error), "is not allowed here") from None
    except asyncpg.DataError:
        raise invalid("(root)", "a value is out of the range the database can store") from None


# -- Clinics ---------------------------------------------------------------------------------------

MinNotice = Annotated[int, Field(ge=0, le=60 * 24 * 30, description="minutes")]
HorizonDays = Annotated[int, Field(ge=1, le=730, description="days ahead patients may book")]
CancellationNotice = Annotated[int, Field(ge=0, le=24 * 30, description="hours")]
HoldMinutes = Annotated[int, Field(ge=1, le=120, description="minutes a hold keeps a slot")]
NoShowGrace = Annotated[int, Field(ge=0, le=24 * 60, description="minutes after the end")]
SlotStep = Annotated[int, Field(ge=5, le=120, description="minutes between offered starts")]


class Clinic(BaseModel):
    id: int
    name: Name
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
    version: int
    created_at: datetime


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

    @field_validator("quiet_end")
    @classmethod
    def _quiet_end_after_start(cls, end: time, info: ValidationInfo) -> time:
        start = info.data.get("quiet_start")
        if start is not None and end <= start:
            raise ValueError("must be after quiet_start")
        return end


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


class ClinicPage(BaseModel):
    items: list[Clinic]
    next_cursor: str | None


def _settings(values: Mapping[str, Any]) -> ClinicSettings:
    return ClinicSettings(**{f.name: values[f.name] for f in dataclasses.fields(ClinicSettings)})


@API.route(
    "GET",
    "/api/v1/clinics",
    summary="List clinics",
    tag="clinics",
    roles=ALL_STAFF,
    query=PageQuery,
    response=ClinicPage,
)
async def list_clinics(ctx: Ctx) -> ClinicPage:
    query: PageQuery = ctx.query
    (after_id,) = decode_cursor(query.cursor, int) or [None]
    rows = await clinics.list_clinics(ctx.pool, after_id=after_id, limit=query.limit + 1)
    items = [Clinic.model_validate(r) for r in rows[: query.limit]]
    more = len(rows) > query.limit
    return ClinicPage(items=items, next_cursor=encode_cursor(items[-1].id) if more else None)


@API.route(
    "POST",
    "/api/v1/clinics",
    summary="Create a clinic",
    tag="clinics",
    roles=ADMIN,
    body=ClinicCreate,
    response=Clinic,
    status=201,
)
async def create_clinic(ctx: Ctx) -> Clinic:
    body: ClinicCreate = ctx.body
    with database_errors():
        async with ctx.pool.acquire() as conn, conn.transaction():
            row = await clinics.create_clinic(conn, _settings(body.model_dump()), now=ctx.now)
            created = Clinic.model_validate(row)
            await record(
                conn,
                ctx,
                action="create",
                entity="clinic",
                entity_id=created.id,
                details={"clinic": created.model_dump(mode="json")},
            )
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
    row = await clinics.get_clinic(ctx.pool, clinic_id)
    if row is None:
        raise not_found("clinic", clinic_id)
    return Clinic.model_validate(row)


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
    expected = ctx.if_match()
    sent = ctx.body.model_dump(exclude_unset=True)
    with database_errors():
        async with ctx.pool.acquire() as conn, conn.transaction():
            row = await clinics.get_clinic(conn, clinic_id, for_update=True)
            if row is None:
                raise not_found("clinic", clinic_id)
            if row["version"] != expected:
                raise stale("clinic", clinic_id, row["version"])
            before = Clinic.model_validate(row)
            if not sent:
                return before
            merged = {**row, **sent}
            if merged["quiet_end"] <= merged["quiet_start"]:
                path = "quiet_end" if "quiet_end" in sent else "quiet_start"
                raise invalid(path, "quiet_end must be after quiet_start")
            updated = await clinics.update_clinic(
                conn, clinic_id, expected_version=expected, settings=_settings(merged)
            )
            assert updated is not None  # the row is locked and its version checked above
            after = Clinic.model_validate(updated)
            await record(
                conn,
                ctx,
                action="update",
                entity="clinic",
                entity_id=clinic_id,
                details={"changes": changes(before, after)},
            )
    return after
