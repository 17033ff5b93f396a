"""The pieces the admin and public endpoint modules share, so that each rule lives in one place:
role sets, field types whose OpenAPI schema says exactly what is accepted, opaque keyset cursors
for the setup lists, optimistic concurrency answers, audit writing, and the mapping of database
constraint errors to 409/422.

This module registers no routes (every module of the package is imported to register routes;
importing this one only defines helpers).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, NamedTuple, TypeVar

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
)

from services.booking.api.framework import ApiError, Ctx, invalid, not_found
from shared.domain.names import UNSAFE_NAME_RULE, check_name
from shared.store import audit, clinics
from shared.store.staff_tokens import Role

# -- Roles -----------------------------------------------------------------------------------------

ALL_STAFF: tuple[Role, ...] = ("admin", "front_desk", "clinician")
ADMIN: tuple[Role, ...] = ("admin",)
# The desk's daily work: booking, schedules, contact details, state changes at the counter.
DESK: tuple[Role, ...] = ("admin", "front_desk")
# Clinical judgement: clinical text, completing sessions, going below a course's hard minimum.
CLINICAL: tuple[Role, ...] = ("admin", "clinician")

# -- Field types -----------------------------------------------------------------------------------

MAX_ID = 2**63 - 1  # bigint; a bigger number would overflow in the driver instead of a 404/422

Id = Annotated[int, Field(ge=1, le=MAX_ID)]

# PostgreSQL text cannot hold NUL, so it is refused at the door rather than by the database.
NO_NUL = r"^[^\x00]*$"
# At least one visible character, and no NUL anywhere.
NOT_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"

# A name as stored: what reads return, including names saved before `Name`'s character rule.
StoredName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NOT_BLANK)]
# A name as typed into a request (clinic, practitioner, treatment).
Name = Annotated[
    StoredName,
    AfterValidator(check_name),
    Field(description=f"1 to 200 characters; {UNSAFE_NAME_RULE}"),
]
Phone = Annotated[
    str,
    StringConstraints(pattern=r"^\+[1-9][0-9]{6,14}$"),
    Field(description="E.164, e.g. +442079460000", examples=["+442079460000"]),
]
ShortText = Annotated[str, StringConstraints(max_length=500, pattern=NO_NUL)]
LongText = Annotated[str, StringConstraints(max_length=4000, pattern=NO_NUL)]


def storable(text: str) -> str:
    """An AfterValidator for free text: PostgreSQL text cannot hold NUL, and lone surrogates
    cannot be encoded as UTF-8, so both are refused here rather than fail in the database."""
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return text


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


# A field validator taking (value, info), as pydantic calls one; values are compared with < and <=.
FieldCheck = Callable[[Any, ValidationInfo], Any]


def later_than(earlier: str) -> FieldCheck:
    """A field validator (`field_validator("ends")(later_than("starts"))`): the field must come
    strictly after the field `earlier`, when that one was valid."""

    def check(value: Any, info: ValidationInfo) -> Any:
        first = info.data.get(earlier)
        if first is not None and value <= first:
            raise ValueError(f"must be after {earlier}")
        return value

    return check


def at_least(lower: str) -> FieldCheck:
    """A field validator: the field must not be below the field `lower`, when that was valid."""

    def check(value: Any, info: ValidationInfo) -> Any:
        low = info.data.get(lower)
        if low is not None and value < low:
            raise ValueError(f"must be at least {lower} ({low})")
        return value

    return check


def check_span(since: datetime | None, until: datetime | None) -> None:
    """Query filters `since`/`until` must leave a non-empty range when both are given."""
    if since is not None and until is not None and until <= since:
        raise invalid("until", "must be after since", where="query")


# -- Keyset pagination of the setup lists ----------------------------------------------------------

Cursor = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,200}$"),
    Field(description="next_cursor from the previous page"),
]


class PageQuery(BaseModel):
    """`limit` and `cursor` of the setup lists, whose cursors carry the whole keyset (e.g. a
    start and an id) rather than framework.PageQuery's single id."""

    limit: int = Field(50, ge=1, le=200, description="items per page")
    cursor: Cursor = optional()

    def after_id(self) -> int | None:
        """The id the cursor continues after, for lists ordered by id."""
        (after,) = decode_cursor(self.cursor, int) or [None]
        return after


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


R = TypeVar("R")
M = TypeVar("M")


def page(
    rows: Sequence[R], limit: int, view: Callable[[R], M], key: Callable[[M], tuple[Any, ...]]
) -> tuple[list[M], str | None]:
    """One page of a setup list: the first `limit` rows as `view` shows them, and a cursor after
    the last one (its `key` values) when there are more. The store is asked for limit + 1 rows,
    so that a full last page does not lead to an empty one."""
    items = [view(row) for row in rows[:limit]]
    more = len(rows) > limit
    return items, encode_cursor(*key(items[-1])) if more else None


def by_id(item: Any) -> tuple[int]:
    """The keyset of lists ordered by id (a `page` key)."""
    return (item.id,)


# -- Lookups, concurrency --------------------------------------------------------------------------

T = TypeVar("T")


def or_not_found(row: T | None, what: str, ident: int) -> T:
    """The row, or a 404 naming what was looked for."""
    if row is None:
        raise not_found(what, ident)
    return row


def unknown_reference(path: str, what: str, ident: int) -> ApiError:
    """A body naming a record that does not exist: 404 like any unknown id, with the field."""
    return ApiError(
        404,
        "Not Found",
        f"{path}: no {what} with id {ident}",
        type_="not-found",
        errors=[{"in": "body", "path": path, "message": f"no {what} with id {ident}"}],
    )


async def require_clinic(conn: asyncpg.Connection, clinic_id: int) -> None:
    """A new practitioner or treatment must name an existing clinic (404 on `clinic_id`)."""
    if not await clinics.clinic_exists(conn, clinic_id):
        raise unknown_reference("clinic_id", "clinic", clinic_id)


def precondition_failed(detail: str, **extra: Any) -> ApiError:
    """412 for an If-Match that no longer matches; every stale answer shares its type."""
    return ApiError(412, "Precondition Failed", detail, type_="stale", **extra)


def stale(what: str, ident: int, current_version: int) -> ApiError:
    return precondition_failed(
        f"{what} {ident} changed since you read it (it is now at version {current_version}); "
        "reload it and apply your change again",
        current_version=current_version,
    )


def check_version(what: str, ident: int, row: Mapping[str, Any], expected: int) -> None:
    """The locked row must still be at the version the client read (If-Match), else 412."""
    if row["version"] != expected:
        raise stale(what, ident, row["version"])


def fields_of(cls: type[T], values: Mapping[str, Any]) -> T:
    """The store's dataclass `cls` (e.g. ClinicSettings) from a merged row/body mapping; keys
    that are not its fields are ignored."""
    assert dataclasses.is_dataclass(cls)
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})


# -- Audit -----------------------------------------------------------------------------------------


async def record(
    conn: asyncpg.Connection,
    ctx: Ctx,
    *,
    action: str,
    entity: str,
    entity_id: int | None,
    details: dict[str, Any] | None = None,
    patient_id: int | None = None,
    reason: str = "",
) -> None:
    """The audit row of one write (or read), inside the caller's transaction, with the caller
    and the request id taken from the request."""
    await audit.record(
        conn,
        at=ctx.now,
        actor=ctx.actor,
        action=action,
        entity=entity,
        entity_id=entity_id,
        patient_id=patient_id,
        reason=reason,
        details=details,
        request_id=ctx.request_id,
    )


async def record_item(
    conn: asyncpg.Connection,
    ctx: Ctx,
    action: str,
    entity: str,
    entity_id: int,
    item: BaseModel,
    *,
    key: str | None = None,
) -> None:
    """Audit a create or delete with the whole record as the API shows it, under `key`
    (default: the entity's name), so the log keeps what was there."""
    details = {key or entity: item.model_dump(mode="json")}
    await record(conn, ctx, action=action, entity=entity, entity_id=entity_id, details=details)


class Read(NamedTuple):
    """One audit row of a read: what was shown, whose it is, and how it was shown."""

    entity_id: int | None
    patient_id: int | None
    details: dict[str, Any]


async def record_reads(ctx: Ctx, *, action: str, entity: str, reads: Sequence[Read]) -> None:
    """The audit rows of what one answer showed. A read has no transaction of its own to share,
    so the rows get one (all or none)."""
    if not reads:
        return
    async with ctx.pool.acquire() as conn, conn.transaction():
        for read in reads:
            await record(
                conn,
                ctx,
                action=action,
                entity=entity,
                entity_id=read.entity_id,
                patient_id=read.patient_id,
                details=read.details,
            )


def changes(before: BaseModel, after: BaseModel) -> dict[str, Any]:
    """{field: {"from": old, "to": new}} for what differs, version aside (for the audit log)."""
    old = before.model_dump(mode="json", exclude={"version"})
    new = after.model_dump(mode="json", exclude={"version"})
    return {k: {"from": old.get(k), "to": v} for k, v in new.items() if old.get(k) != v}


# -- Database errors -------------------------------------------------------------------------------


def constraint_path(error: asyncpg.PostgresError) -> str:
    """The body field a failed column check is about; "(root)" for any other constraint."""
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
        raise invalid(constraint_path(error), "is not allowed here") from None
    except asyncpg.DataError:
        raise invalid("(root)", "a value is out of the range the database can store") from None


@asynccontextmanager
async def writing(
    ctx: Ctx, conflicts: Mapping[str, str] | None = None
) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a transaction for one write and its audit row, with constraint errors
    (commit included) answered as `database_errors` does."""
    with database_errors(conflicts):
        async with ctx.pool.acquire() as conn, conn.transaction():
            yield conn


# -- Shared endpoint bodies of the versioned setup records (clinic, practitioner, treatment) ------

Row = dict[str, Any]
V = TypeVar("V", bound=BaseModel)


async def update_versioned(
    ctx: Ctx,
    *,
    entity: str,
    ident: int,
    changed: bool,
    lock: Callable[[asyncpg.Connection, int], Awaitable[Row]],
    view: Callable[[Row], V],
    write: Callable[[asyncpg.Connection, Row], Awaitable[Row | None]],
    conflicts: Mapping[str, str] | None = None,
) -> V:
    """PATCH of a versioned record: lock it (`lock` answers 404), compare its version with
    If-Match (412 when it moved on), let `write` store the merged record, and audit the fields
    whose values changed. Nothing sent (`changed` false): the record as it is."""
    expected = ctx.if_match()
    async with writing(ctx, conflicts) as conn:
        row = await lock(conn, ident)
        check_version(entity, ident, row, expected)
        before = view(row)
        if not changed:
            return before
        updated = await write(conn, row)
        assert updated is not None  # locked and version-checked above
        after = view(updated)
        details = {"changes": changes(before, after)}
        await record(conn, ctx, action="update", entity=entity, entity_id=ident, details=details)
    return after


async def delete_or_deactivate(
    ctx: Ctx,
    *,
    entity: str,
    ident: int,
    lock: Callable[[asyncpg.Connection, int], Awaitable[Row]],
    view: Callable[[Row], BaseModel],
    delete: Callable[[asyncpg.Connection, int], Awaitable[bool]],
    check: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> None:
    """DELETE of a record that history may refer to: the store deletes it, or deactivates it
    when something still refers to it; `check` may refuse first. Audited with the record."""
    async with writing(ctx) as conn:
        row = await lock(conn, ident)
        if check is not None:
            await check(conn)
        deleted = await delete(conn, ident)
        action = "delete" if deleted else "deactivate"
        await record_item(conn, ctx, action, entity, ident, view(row))
