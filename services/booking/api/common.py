"""The pieces the admin and public endpoint modules share, so that each rule lives in one place:
role sets, checks across fields, optimistic concurrency answers, audit writing, and the mapping of
database constraint errors to 409/422. Field types are in `fields`, lists and cursors in
`pagination`.

This module registers no routes (every module of the package is imported to register routes;
importing this one only defines helpers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple, Protocol, TypeVar

import asyncpg
from pydantic import BaseModel, ValidationInfo

from services.booking.api.framework import ApiError, Ctx, invalid, not_found
from shared.db.transactions import Work, in_transaction
from shared.store import audit, clinics
from shared.store.staff_tokens import Role

# -- Roles -----------------------------------------------------------------------------------------

ALL_STAFF: tuple[Role, ...] = ("admin", "front_desk", "clinician")
ADMIN: tuple[Role, ...] = ("admin",)
# The desk's daily work: booking, schedules, contact details, state changes at the counter.
DESK: tuple[Role, ...] = ("admin", "front_desk")
# Clinical judgement: clinical text, completing sessions, going below a course's hard minimum.
CLINICAL: tuple[Role, ...] = ("admin", "clinician")

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
    if not await clinics.exists(conn, clinic_id):
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


class Versioned(Protocol):
    @property
    def version(self) -> int: ...


def check_version(what: str, ident: int, row: Versioned, expected: int) -> None:
    """The locked row must still be at the version the client read (If-Match), else 412."""
    if row.version != expected:
        raise stale(what, ident, row.version)


def as_dict(row: Any) -> dict[str, Any]:
    """A store's row dataclass as a mapping of its fields (shallow: nested rows stay rows), to
    merge a PATCH body into or to validate an API model from."""
    assert dataclasses.is_dataclass(row) and not isinstance(row, type)
    return {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}


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
    await audit.insert(
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

    async def work(conn: asyncpg.Connection) -> None:
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

    await in_transaction(ctx.pool, work)


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


async def write(ctx: Ctx, work: Work[T], conflicts: Mapping[str, str] | None = None) -> T:
    """One write and its audit row in a transaction (shared.db.transactions.in_transaction, with
    its retries), constraint errors (commit included) answered as `database_errors` does."""
    with database_errors(conflicts):
        return await in_transaction(ctx.pool, work)


# -- Shared endpoint bodies of the versioned setup records (clinic, practitioner, treatment) ------

R = TypeVar("R", bound=Versioned)
V = TypeVar("V", bound=BaseModel)


async def update_versioned(
    ctx: Ctx,
    *,
    entity: str,
    ident: int,
    changed: bool,
    lock: Callable[[asyncpg.Connection, int], Awaitable[R]],
    view: Callable[[R], V],
    store: Callable[[asyncpg.Connection, R], Awaitable[R | None]],
    conflicts: Mapping[str, str] | None = None,
) -> V:
    """PATCH of a versioned record: lock it (`lock` answers 404), compare its version with
    If-Match (412 when it moved on), let `store` write the merged record, and audit the fields
    whose values changed. Nothing sent (`changed` false): the record as it is."""
    expected = ctx.if_match()

    async def work(conn: asyncpg.Connection) -> V:
        row = await lock(conn, ident)
        check_version(entity, ident, row, expected)
        before = view(row)
        if not changed:
            return before
        updated = await store(conn, row)
        assert updated is not None  # locked and version-checked above
        after = view(updated)
        details = {"changes": changes(before, after)}
        await record(conn, ctx, action="update", entity=entity, entity_id=ident, details=details)
        return after

    return await write(ctx, work, conflicts)


async def delete_or_deactivate(
    ctx: Ctx,
    *,
    entity: str,
    ident: int,
    lock: Callable[[asyncpg.Connection, int], Awaitable[R]],
    view: Callable[[R], BaseModel],
    delete: Callable[[asyncpg.Connection, int], Awaitable[bool]],
    check: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> None:
    """DELETE of a record that history may refer to: the store deletes it, or deactivates it
    when something still refers to it; `check` may refuse first. Audited with the record."""

    async def work(conn: asyncpg.Connection) -> None:
        row = await lock(conn, ident)
        if check is not None:
            await check(conn)
        deleted = await delete(conn, ident)
        action = "delete" if deleted else "deactivate"
        await record_item(conn, ctx, action, entity, ident, view(row))

    await write(ctx, work)
