"""Patients and their consents (owner of `patient` and `patient_consent`).

Consents are append-only: each change is a new timestamped row with its source and wording
version, and the current consent of a kind is the newest row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

import asyncpg

Executor = asyncpg.Connection | asyncpg.Pool
ConsentKind = Literal["care_sms", "care_email", "marketing_sms", "marketing_email"]
CONSENT_KINDS: tuple[ConsentKind, ...] = (
    "care_sms",
    "care_email",
    "marketing_sms",
    "marketing_email",
)


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


@dataclass(frozen=True)
class Consent:
    kind: ConsentKind
    granted: bool
    source: str
    wording_version: str
    recorded_at: datetime


class StaleVersion(Exception):
    """The patient changed since the caller read it."""


async def create(
    conn: Executor,
    *,
    clinic_id: int,
    first_name: str,
    last_name: str,
    mobile: str | None,
    email: str | None,
    date_of_birth: date | None,
    allergies: str = "",
    medications: str = "",
    screening: dict[str, Any] | None = None,
    notes: str = "",
    language: str = "en",
    now: datetime,
) -> int:
    return int(
        await conn.fetchval(
            """
            INSERT INTO patient (clinic_id, first_name, last_name, mobile, email, date_of_birth,
                allergies, medications, screening, notes, language, created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
            RETURNING id
            """,
            clinic_id,
            first_name,
            last_name,
            mobile,
            email,
            date_of_birth,
            allergies,
            medications,
            screening or {},
            notes,
            language,
            now,
        )
    )


async def get(db: Executor, patient_id: int) -> Patient | None:
    return (await get_many(db, [patient_id])).get(patient_id)


async def get_many(db: Executor, patient_ids: Sequence[int]) -> dict[int, Patient]:
    """id → patient for those of `patient_ids` that exist, in one query."""
    rows = await db.fetch(
        """
        SELECT id, clinic_id, first_name, last_name, mobile, email, date_of_birth, allergies,
               medications, screening, notes, language, time_zone, sms_opted_out_at, erased_at,
               version, created_at, updated_at, link_version
        FROM patient WHERE id = ANY($1::bigint[])
        """,
        list(set(patient_ids)),
    )
    return {row["id"]: Patient(**dict(row)) for row in rows}


async def lock(conn: asyncpg.Connection, patient_id: int) -> Patient | None:
    """Read and lock a patient for the rest of the caller's transaction (erasure reads the
    contact it is about to clear, and nobody may change it in between)."""
    row = await conn.fetchrow(
        """
        SELECT id, clinic_id, first_name, last_name, mobile, email, date_of_birth, allergies,
               medications, screening, notes, language, time_zone, sms_opted_out_at, erased_at,
               version, created_at, updated_at, link_version
        FROM patient WHERE id = $1 FOR UPDATE
        """,
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


async def search(
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
        """
        SELECT id, clinic_id, first_name, last_name, mobile, email, date_of_birth, allergies,
               medications, screening, notes, language, time_zone, sms_opted_out_at, erased_at,
               version, created_at, updated_at, link_version
        FROM patient
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
        """,
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
        """
        SELECT id, clinic_id, first_name, last_name, mobile, email, date_of_birth, allergies,
               medications, screening, notes, language, time_zone, sms_opted_out_at, erased_at,
               version, created_at, updated_at, link_version
        FROM patient
        WHERE clinic_id = $1 AND erased_at IS NULL
          AND (($2::text IS NOT NULL AND mobile = $2)
               OR ($3::text IS NOT NULL AND lower(email) = lower($3)))
        ORDER BY (mobile = $2) DESC NULLS LAST, id
        LIMIT 1
        """,
        clinic_id,
        mobile,
        email,
    )
    return None if row is None else Patient(**dict(row))


async def record_consent(
    conn: Executor,
    patient_id: int,
    *,
    kind: ConsentKind,
    granted: bool,
    source: str,
    wording_version: str,
    now: datetime,
) -> None:
    await conn.execute(
        """
        INSERT INTO patient_consent (patient_id, kind, granted, source, wording_version,
                                     recorded_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        """,
        patient_id,
        kind,
        granted,
        source,
        wording_version,
        now,
    )


async def current_consents(db: Executor, patient_id: int) -> dict[ConsentKind, Consent]:
    """The newest consent row of each kind; a kind never asked about is absent (not granted)."""
    return (await current_consents_many(db, [patient_id])).get(patient_id, {})


async def current_consents_many(
    db: Executor, patient_ids: Sequence[int]
) -> dict[int, dict[ConsentKind, Consent]]:
    """patient id → current_consents, in one query (a patient without any is absent)."""
    rows = await db.fetch(
        """
        SELECT DISTINCT ON (patient_id, kind) patient_id, kind, granted, source, wording_version,
               recorded_at
        FROM patient_consent WHERE patient_id = ANY($1::bigint[])
        ORDER BY patient_id, kind, recorded_at DESC, id DESC
        """,
        list(set(patient_ids)),
    )
    found: dict[int, dict[ConsentKind, Consent]] = {}
    for row in rows:
        data = dict(row)
        patient_id = data.pop("patient_id")
        found.setdefault(patient_id, {})[row["kind"]] = Consent(**data)
    return found


async def consent_history(db: Executor, patient_id: int) -> list[Consent]:
    rows = await db.fetch(
        """
        SELECT kind, granted, source, wording_version, recorded_at
        FROM patient_consent WHERE patient_id = $1 ORDER BY recorded_at, id
        """,
        patient_id,
    )
    return [Consent(**dict(r)) for r in rows]


async def consent_history_page(
    db: Executor, patient_id: int, *, after: tuple[datetime, int] | None, limit: int
) -> list[tuple[int, Consent]]:
    """Up to `limit` entries of `consent_history` with their ids, in the same order, after the
    entry whose (recorded_at, id) is `after` (keyset pagination)."""
    rows = await db.fetch(
        """
        SELECT id, kind, granted, source, wording_version, recorded_at
        FROM patient_consent
        WHERE patient_id = $1
          AND ($2::timestamptz IS NULL OR (recorded_at, id) > ($2, $3::bigint))
        ORDER BY recorded_at, id
        LIMIT $4
        """,
        patient_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [(r["id"], Consent(**{k: v for k, v in dict(r).items() if k != "id"})) for r in rows]


# -- erasure (added for the admin API) -------------------------------------------------------------

# What an erased patient's names become: the columns are NOT NULL, and staff looking at an old
# appointment should see plainly why there is no name.
ERASED_NAME = "Erased"
ERASED_FIELDS = ("first_name", "last_name", "mobile", "email")
MARKETING_KINDS: tuple[ConsentKind, ...] = ("marketing_sms", "marketing_email")


async def erase(conn: Executor, patient_id: int, *, now: datetime) -> Patient | None:
    """Clear the names and contact of a patient (EU erasure) and revoke every link sent to them,
    keeping the medical fields, date of birth, consents and appointments, which must stay for
    the legal period.

    Returns None when the patient is unknown or already erased (one erasure only, so a second
    request cannot hide behind a fresh erased_at). The caller does the rest of an erasure in
    the same transaction (services/booking/api/admin_patients.py `erase_patient`).
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
    """Twilio refused with 21610: the patient opted out (by STOP) somewhere we did not see."""
    await conn.execute(
        """
        UPDATE patient SET sms_opted_out_at = $2, version = version + 1, updated_at = $2
        WHERE id = $1 AND sms_opted_out_at IS NULL
        """,
        patient_id,
        now,
    )
