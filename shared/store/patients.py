"""Patients (owner of `patient`). Their consents are shared/store/consents.py.

Invariants: every change bumps `version`, and `update` refuses one made against an older read
(StaleVersion); a changed mobile or email, an erasure and staff's "send a new link" bump
`link_version`, which revokes every self-service link issued before. An erased patient keeps
the row (the medical fields, date of birth and appointments must stay for the legal period)
with names and contact cleared, and is never found by a search or a booking form again. Two
bookings by one new patient at once find or create one record (`lock_contact`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

from shared.store import Executor, affected


@dataclass(frozen=True)
class Patient:
    id: int
    clinic_id: int
    first_name: str
    last_name: str
    mobile: str | None
    email: str | None
    date_of_birth: date | None
    allergies: str
    medications: str
    screening: dict[str, Any]
    notes: str
    language: str
    time_zone: str | None
    sms_opted_out_at: datetime | None
    erased_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime
    # Signed self-service links carry it; a link with an older number no longer opens.
    link_version: int = 1


class StaleVersion(Exception):
    """The patient changed since the caller read it."""


_COLUMNS = """id, clinic_id, first_name, last_name, mobile, email, date_of_birth, allergies,
    medications, screening, notes, language, time_zone, sms_opted_out_at, erased_at, version,
    created_at, updated_at, link_version"""


@dataclass(frozen=True)
class NewPatient:
    """What an insert needs; the defaults are the schema's."""

    clinic_id: int
    first_name: str
    last_name: str
    mobile: str | None = None
    email: str | None = None
    date_of_birth: date | None = None
    allergies: str = ""
    medications: str = ""
    screening: dict[str, Any] | None = None
    notes: str = ""
    language: str = "en"


async def insert(conn: Executor, new: NewPatient, *, now: datetime) -> int:
    return int(
        await conn.fetchval(
            """
            INSERT INTO patient (clinic_id, first_name, last_name, mobile, email, date_of_birth,
                allergies, medications, screening, notes, language, created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
            RETURNING id
            """,
            new.clinic_id,
            new.first_name,
            new.last_name,
            new.mobile,
            new.email,
            new.date_of_birth,
            new.allergies,
            new.medications,
            new.screening or {},
            new.notes,
            new.language,
            now,
        )
    )


async def get(db: Executor, patient_id: int) -> Patient | None:
    return (await get_many(db, [patient_id])).get(patient_id)


async def get_many(db: Executor, patient_ids: Sequence[int]) -> dict[int, Patient]:
    """id → patient for those of `patient_ids` that exist, in one query."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM patient WHERE id = ANY($1::bigint[])",  # noqa: S608 - constant
        list(set(patient_ids)),
    )
    return {row["id"]: Patient(**dict(row)) for row in rows}


async def lock(conn: asyncpg.Connection, patient_id: int) -> Patient | None:
    """Read and lock a patient for the rest of the caller's transaction (erasure reads the
    contact it is about to clear, and nobody may change it in between)."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM patient WHERE id = $1 FOR UPDATE",  # noqa: S608 - constant
        patient_id,
    )
    return None if row is None else Patient(**dict(row))


# Columns staff and patients may change; anything else is set by dedicated functions.
UPDATABLE = (
    "first_name",
    "last_name",
    "mobile",
    "email",
    "date_of_birth",
    "allergies",
    "medications",
    "screening",
    "notes",
    "language",
    "time_zone",
)


async def update(
    conn: Executor,
    patient_id: int,
    *,
    expected_version: int,
    changes: dict[str, Any],
    now: datetime,
) -> Patient | None:
    """Apply `changes` (keys from UPDATABLE) if the version still matches.

    Returns None for an unknown patient; raises StaleVersion when someone changed it first.
    A changed mobile or email bumps `link_version`, so links sent to the old contact stop
    working whichever path (staff API, self-service page) made the change.
    """
    unknown = set(changes) - set(UPDATABLE)
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    # One fixed statement: each column keeps its value unless its flag says it was sent.
    row = await conn.fetchrow(
        """
        UPDATE patient SET
            first_name    = CASE WHEN $3  THEN $4  ELSE first_name END,
            last_name     = CASE WHEN $5  THEN $6  ELSE last_name END,
            mobile        = CASE WHEN $7  THEN $8  ELSE mobile END,
            email         = CASE WHEN $9  THEN $10 ELSE email END,
            date_of_birth = CASE WHEN $11 THEN $12 ELSE date_of_birth END,
            allergies     = CASE WHEN $13 THEN $14 ELSE allergies END,
            medications   = CASE WHEN $15 THEN $16 ELSE medications END,
            screening     = CASE WHEN $17 THEN $18 ELSE screening END,
            notes         = CASE WHEN $19 THEN $20 ELSE notes END,
            language      = CASE WHEN $21 THEN $22 ELSE language END,
            time_zone     = CASE WHEN $23 THEN $24 ELSE time_zone END,
            -- A new mobile or email revokes every link sent so far (they went to the old one).
            link_version = link_version + CASE
                WHEN ($7 AND mobile IS DISTINCT FROM $8) OR ($9 AND email IS DISTINCT FROM $10)
                THEN 1 ELSE 0 END,
            version = version + 1,
            updated_at = $25
        WHERE id = $1 AND version = $2
        RETURNING id
        """,
        patient_id,
        expected_version,
        *[item for name in UPDATABLE for item in (name in changes, changes.get(name))],
        now,
    )
    if row is None:
        if await get(conn, patient_id) is None:
            return None
        raise StaleVersion()
    return await get(conn, patient_id)


async def list_page(
    db: Executor,
    *,
    clinic_id: int,
    name: str | None,
    mobile: str | None,
    email: str | None,
    after_id: int | None,
    limit: int,
) -> list[Patient]:
    """Patients matching every given filter: name by similarity (typos forgiven), phone and email
    exactly (after normalisation by the caller); ordered by id for keyset pagination."""
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM patient
        WHERE clinic_id = $1
          AND erased_at IS NULL
          AND ($2::text IS NULL
               OR lower(first_name || ' ' || last_name) % lower($2)
               -- word similarity: one misspelt word of a long name ('rodriges' for 'maria del
               -- carmen rodriguez') is too unlike the whole name for % alone.
               OR lower($2) <% lower(first_name || ' ' || last_name)
               OR lower(first_name || ' ' || last_name) LIKE '%' || lower($2) || '%')
          AND ($3::text IS NULL OR mobile = $3)
          AND ($4::text IS NULL OR lower(email) = lower($4))
          AND ($5::bigint IS NULL OR id > $5)
        ORDER BY id
        LIMIT $6
        """,  # noqa: S608 - constant
        clinic_id,
        name,
        mobile,
        email,
        after_id,
        limit,
    )
    return [Patient(**dict(r)) for r in rows]


async def find_by_contact(
    db: Executor, *, clinic_id: int, mobile: str | None, email: str | None
) -> Patient | None:
    """The patient a public booking belongs to: same mobile, or same email, not erased."""
    row = await db.fetchrow(
        f"""
        SELECT {_COLUMNS} FROM patient
        WHERE clinic_id = $1 AND erased_at IS NULL
          AND (($2::text IS NOT NULL AND mobile = $2)
               OR ($3::text IS NOT NULL AND lower(email) = lower($3)))
        ORDER BY (mobile = $2) DESC NULLS LAST, id
        LIMIT 1
        """,  # noqa: S608 - constant
        clinic_id,
        mobile,
        email,
    )
    return None if row is None else Patient(**dict(row))


async def with_mobile(db: Executor, mobile: str) -> list[Patient]:
    """Every patient, in any clinic, whose mobile is `mobile` (E.164) and who is not erased:
    an SMS reply's possible senders (a parent may book for two children on one number)."""
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM patient
        WHERE mobile = $1 AND erased_at IS NULL
        ORDER BY id
        """,  # noqa: S608 - constant
        mobile,
    )
    return [Patient(**dict(r)) for r in rows]


async def lock_contact(conn: asyncpg.Connection, clinic_id: int, keys: Sequence[str]) -> None:
    """Serialise, until the caller's transaction ends, finding-or-creating the patient of these
    contacts (normalised mobile and email): two bookings by the same new patient at once must
    not create two records. Transaction-scoped advisory locks, taken in a fixed order."""
    for key in sorted(keys):
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            f"regimen.patient-contact:{clinic_id}:{key}",
        )


async def others_have_mobile(
    db: Executor, *, clinic_id: int, mobile: str | None, patient_id: int
) -> bool:
    """Whether another patient of the clinic, not erased, has this mobile."""
    return bool(
        await db.fetchval(
            """
            SELECT EXISTS (SELECT 1 FROM patient
                           WHERE clinic_id = $1 AND mobile = $2 AND id <> $3
                             AND erased_at IS NULL)
            """,
            clinic_id,
            mobile,
            patient_id,
        )
    )


# -- erasure (added for the admin API) -------------------------------------------------------------

# What an erased patient's names become: the columns are NOT NULL, and staff looking at an old
# appointment should see plainly why there is no name.
ERASED_NAME = "Erased"
ERASED_FIELDS = ("first_name", "last_name", "mobile", "email")


async def erase(conn: Executor, patient_id: int, *, now: datetime) -> Patient | None:
    """Clear the names and contact of a patient (EU erasure) and revoke every link sent to them,
    keeping the medical fields, date of birth, consents and appointments, which must stay for
    the legal period.

    Returns None when the patient is unknown or already erased (one erasure only, so a second
    request cannot hide behind a fresh erased_at). The caller does the rest of an erasure in
    the same transaction (services/booking/api/admin_erasure.py `erase_patient`).
    """
    erased = await conn.fetchval(
        """
        UPDATE patient SET first_name = $2, last_name = $2, mobile = NULL, email = NULL,
            erased_at = $3, link_version = link_version + 1, version = version + 1,
            updated_at = $3
        WHERE id = $1 AND erased_at IS NULL
        RETURNING id
        """,
        patient_id,
        ERASED_NAME,
        now,
    )
    return None if erased is None else await get(conn, patient_id)


async def renew_links(conn: Executor, patient_id: int, *, now: datetime) -> int | None:
    """Revoke every link issued so far (staff: "send a new link"); the new link version, or
    None for an unknown or erased patient."""
    value = await conn.fetchval(
        """
        UPDATE patient SET link_version = link_version + 1, version = version + 1,
            updated_at = $2
        WHERE id = $1 AND erased_at IS NULL
        RETURNING link_version
        """,
        patient_id,
        now,
    )
    return None if value is None else int(value)


async def record_sms_opt_out(conn: Executor, patient_id: int, *, now: datetime) -> None:
    """The patient's number opted out of SMS: they sent STOP (or another opt-out word), or
    Twilio refused with 21610 (they opted out somewhere we did not see)."""
    await conn.execute(
        """
        UPDATE patient SET sms_opted_out_at = $2, version = version + 1, updated_at = $2
        WHERE id = $1 AND sms_opted_out_at IS NULL
        """,
        patient_id,
        now,
    )


async def record_sms_opt_in(conn: Executor, patient_id: int, *, now: datetime) -> bool:
    """The number opted back in (START, UNSTOP, or YES after an opt-out); whether it had
    opted out."""
    result = await conn.execute(
        """
        UPDATE patient SET sms_opted_out_at = NULL, version = version + 1, updated_at = $2
        WHERE id = $1 AND sms_opted_out_at IS NOT NULL
        """,
        patient_id,
        now,
    )
    return affected(result) == 1


async def merge_screening(
    conn: Executor, patient_id: int, values: dict[str, bool], *, now: datetime
) -> None:
    """Set these keys of the record's screening answers (the others stay): the record follows
    the newest real answers (shared/domain/screening.py). A new version, like any change."""
    await conn.execute(
        """
        UPDATE patient SET screening = screening || $2::jsonb, version = version + 1,
            updated_at = $3
        WHERE id = $1
        """,
        patient_id,
        values,
        now,
    )
