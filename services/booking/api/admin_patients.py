"""Patients in the admin API: search, records, contact and clinical edits; and what the patient
modules share (the record's shapes and role views, contact checks, audit). A patient's consents
are in `admin_consents`, erasure in `admin_erasure`, export in `admin_export`.

Who may do what (each role only what its job needs):

| action                                                          | admin | front_desk | clinician |
| --------------------------------------------------------------- | ----- | ---------- | --------- |
| search, read a record, read its consent history                 | yes   | yes        | yes       |
| create a patient (contact fields only)                          | yes   | yes        | no        |
| PATCH contact fields: names, mobile, email, date of birth,      | yes   | yes        | no        |
|   language, time zone                                           |       |            |           |
| PATCH clinical fields: allergies, medications, screening, notes | no    | no         | yes       |
| record a consent change (source `staff`)                        | yes   | yes        | no        |
| erase (EU erasure request), export (access request)             | yes   | no         | no        |

A PATCH mixing both kinds of field needs a role allowed every field in it; a 403 lists the fields
the role may not change. Clinical fields are only written by clinicians, so what a clinician reads
before a session is never a front-desk paraphrase.

Reads by role: the front desk gets `PatientContactOut` (contact fields and consents), never the
clinical fields (allergies, medications, screening, notes); clinicians and admins get `PatientOut`.
The same holds for what a create or PATCH answers. Search hits carry no clinical field for anyone.

Audit: every write, every read of a record (`patient.read`, with `details.view`), and every search
(`patient.search`, with the ids it returned) writes an audit row in the same transaction as the
read or write, so no patient data leaves without its audit row. PATCH audits the names of the
fields whose values changed, never the values. Nothing here logs; errors name fields, not values.

Contact data: mobiles become E.164 with the clinic's region as default, emails are normalised, a
blank mobile or email means "none". Without `clinic_id` the first clinic is used (an install with
one clinic need not name it).

After an erasure (`admin_erasure`) contact fields cannot be set again and no consent can be
granted (409), while clinicians can still correct clinical fields.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import asyncpg
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    field_validator,
    model_validator,
)

from services.booking.api import API
from services.booking.api.common import (
    ALL_STAFF,
    DESK,
    constraint_path,
    or_not_found,
    precondition_failed,
    record,
)
from services.booking.api.fields import (
    BirthDate,
    Body,
    Contact,
    Id,
    PersonName,
    TimeZone,
    optional,
    text,
)
from services.booking.api.framework import ApiError, Ctx, invalid
from services.booking.api.pagination import Page, PageQuery
from services.booking.domain import screening_checks
from shared.db.transactions import in_transaction
from shared.domain.contact import (
    ContactError,
    CountryNotTexted,
    normalise_email,
    normalise_mobile,
)
from shared.store import clinics, patients
from shared.store import consents as consent_store
from shared.store.consents import ConsentKind
from shared.store.patients import NewPatient, Patient
from shared.store.staff_tokens import Role

TAG = "patients"
BASE = "/api/v1/patients"

CONTACT_FIELDS = frozenset(
    {"first_name", "last_name", "mobile", "email", "date_of_birth", "language", "time_zone"}
)
CLINICAL_FIELDS = frozenset({"allergies", "medications", "screening", "notes"})
FIELD_ROLES: dict[str, tuple[Role, ...]] = {
    **dict.fromkeys(CONTACT_FIELDS, DESK),
    **dict.fromkeys(CLINICAL_FIELDS, ("clinician",)),
}
# Nobody alive was born more than this many years ago; an earlier date is a typing mistake.
MAX_AGE_YEARS = 130

Language = Annotated[
    str, StringConstraints(max_length=35, pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
]
Allergies = text(2000)
Medications = text(2000)
Notes = text(10000)
ScreeningDetails = text(2000)


def _blank_is_none(value: Any) -> Any:
    # Forms send "" for an empty box; for a mobile or an email that means "none".
    if isinstance(value, str) and not value.strip():
        return None
    return value


# -- models ----------------------------------------------------------------------------------------


class Screening(Body):
    """Pre-session screening answers (true: yes, false: no, absent: not asked). A yes does not
    stop a booking; it flags the appointment for clinician review."""

    allergy: StrictBool | None = Field(None, description="to medicines, lidocaine or vitamins")
    blood_thinners_or_nsaids: StrictBool | None = None
    bleeding_disorder: StrictBool | None = None
    pregnant_or_breastfeeding: StrictBool | None = None
    scalp_infection_or_fever: StrictBool | None = None
    immunosuppressed: StrictBool | None = None
    keloid_history: StrictBool | None = None
    isotretinoin: StrictBool | None = None
    details: ScreeningDetails | None = Field(None, description="what the patient said about a yes")


class ConsentOut(BaseModel):
    kind: ConsentKind
    granted: bool
    source: str
    wording_version: str
    recorded_at: datetime


class PatientContactOut(BaseModel):
    """The record as the front desk sees it: who the patient is, how to reach them and what they
    agreed to; none of the clinical fields (allergies, medications, screening, notes)."""

    model_config = ConfigDict(json_schema_extra={"additionalProperties": False})

    id: int
    clinic_id: int
    first_name: str
    last_name: str
    mobile: str | None
    email: str | None
    date_of_birth: date | None
    language: str
    time_zone: str | None
    sms_opted_out_at: datetime | None
    erased_at: datetime | None
    consents: list[ConsentOut]
    version: int
    created_at: datetime
    updated_at: datetime


class PatientOut(PatientContactOut):
    """The full record (clinicians and admins); `consents` holds the current consent of each
    kind ever asked about."""

    allergies: str
    medications: str
    screening: dict[str, Any]
    notes: str


# What the front desk gets instead of PatientOut.
DESK_VIEW: dict[Role, type[BaseModel]] = {"front_desk": PatientContactOut}


class PatientSummary(BaseModel):
    """A search hit: who and how to reach them, no clinical fields."""

    id: int
    clinic_id: int
    first_name: str
    last_name: str
    mobile: str | None
    email: str | None
    date_of_birth: date | None
    version: int


class PatientSearch(PageQuery):
    """Every given filter must match; none lists the clinic's patients. Erased patients are not
    found."""

    clinic_id: Id | None = Field(None, description="default: the first clinic")
    name: (
        Annotated[
            str,
            StringConstraints(
                strip_whitespace=True, max_length=100, pattern=r"^[^\x00-\x1f\x7f%_\\]*$"
            ),
        ]
        | None
    ) = Field(None, description="part of the name; small typos are forgiven")
    mobile: Contact | None = Field(None, description="any format; the clinic's region is assumed")
    email: Contact | None = Field(None, description="case does not matter")

    _blank = field_validator("name", "mobile", "email", mode="before")(_blank_is_none)


class PatientCreate(Body):
    clinic_id: Id | None = Field(None, description="default: the first clinic")
    first_name: PersonName
    last_name: PersonName
    mobile: Contact | None = Field(None, description="any format; the clinic's region is assumed")
    email: Contact | None = None
    date_of_birth: BirthDate | None = None
    language: Language = "en"

    _blank = field_validator("mobile", "email", mode="before")(_blank_is_none)


class PatientPatch(Body):
    """Only the fields sent change; mobile, email, date of birth and time zone may be null
    (cleared). See the module's table for which role may change which field."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    first_name: PersonName = optional()
    last_name: PersonName = optional()
    mobile: Contact | None = None
    email: Contact | None = None
    date_of_birth: BirthDate | None = None
    language: Language = optional()
    time_zone: TimeZone | None = Field(None, description="IANA zone; null: the clinic's")
    allergies: Allergies = optional()
    medications: Medications = optional()
    screening: Screening = optional()
    notes: Notes = optional()

    _blank = field_validator("mobile", "email", mode="before")(_blank_is_none)

    @model_validator(mode="after")
    def _something(self) -> PatientPatch:
        # The schema says minProperties 1; pydantic does not check that by itself.
        if not self.model_fields_set:
            raise ValueError("send at least one field to change")
        return self


# -- helpers ---------------------------------------------------------------------------------------


async def patient_record(conn: asyncpg.Connection, patient: Patient) -> PatientOut:
    current = await consent_store.current(conn, patient.id)
    consents = [current[kind] for kind in sorted(current)]
    return PatientOut.model_validate(
        {**asdict(patient), "consents": consents}, from_attributes=True
    )


def _summary(patient: Patient) -> PatientSummary:
    return PatientSummary.model_validate(patient, from_attributes=True)


@dataclass(frozen=True)
class ClinicLocale:
    clinic_id: int
    region: str  # assumed for a mobile typed without its country code
    time_zone: str  # what "today" is for a date of birth
    sms_countries: tuple[str, ...]  # a mobile from elsewhere is refused


async def _locale(
    db: asyncpg.Pool | asyncpg.Connection, clinic_id: int | None, where: str
) -> ClinicLocale:
    """The named clinic's, or the first clinic's when none is named."""
    if clinic_id is None:
        clinic = await clinics.first(db)
    else:
        clinic = await clinics.get(db, clinic_id)
    if clinic is None:
        raise invalid("clinic_id", "no such clinic", where=where)
    return ClinicLocale(
        clinic.id,
        clinic.region,
        clinic.time_zone,
        clinics.sms_countries_of(clinic.sms_countries, clinic.region),
    )


def _normalised(
    normalise: Callable[[str], str], value: str | None, path: str, where: str
) -> str | None:
    if value is None:
        return None
    try:
        return normalise(value)
    except ContactError as error:
        raise invalid(path, str(error), where=where) from None


def _mobile(value: str | None, locale: ClinicLocale, where: str = "body") -> str | None:
    if value is None:
        return None
    try:
        return normalise_mobile(value, locale.region, countries=locale.sms_countries)
    except CountryNotTexted as refused:
        message = f"{refused}; an admin can add the country to the clinic's sms_countries"
        raise invalid("mobile", message, where=where) from None
    except ContactError as error:
        raise invalid("mobile", str(error), where=where) from None


def _email(value: str | None, where: str = "body") -> str | None:
    return _normalised(normalise_email, value, "email", where)


def _check_birth_date(value: date | None, locale: ClinicLocale, now: datetime) -> None:
    if value is None:
        return
    # "Today" is the clinic's: just after midnight in London it is still yesterday in UTC-5.
    today = now.astimezone(ZoneInfo(locale.time_zone)).date()
    if value > today:
        raise invalid("date_of_birth", "the date of birth is in the future")
    if value.year < today.year - MAX_AGE_YEARS:
        raise invalid("date_of_birth", "the date of birth is too long ago; check the year")


def _check_field_roles(role: Role, fields: Collection[str]) -> None:
    refused = sorted(name for name in fields if role not in FIELD_ROLES[name])
    if refused:
        raise ApiError(
            403,
            "Forbidden",
            f"the {role} role may not change: {', '.join(refused)}",
            errors=[
                {"in": "body", "path": name, "message": "not allowed for this role"}
                for name in refused
            ],
        )


@contextmanager
def _constraint_errors() -> Iterator[None]:
    """The models should stop bad input first; this turns what slips through into a 422 naming
    the column, never a 500."""
    try:
        yield
    except asyncpg.ForeignKeyViolationError:
        raise invalid("clinic_id", "no such clinic") from None
    except asyncpg.CheckViolationError as error:
        raise invalid(constraint_path(error), "not an acceptable value") from None
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError):
        raise invalid("(root)", "a value is not acceptable") from None


async def audit_patient(
    conn: asyncpg.Connection,
    ctx: Ctx,
    action: str,
    patient_id: int | None,
    *,
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> None:
    await record(
        conn,
        ctx,
        action=action,
        entity="patient",
        entity_id=patient_id,
        patient_id=patient_id,
        reason=reason,
        details=details,
    )


async def existing_patient(conn: asyncpg.Connection, patient_id: int) -> Patient:
    return or_not_found(await patients.get(conn, patient_id), "patient", patient_id)


def erased_conflict(patient: Patient, detail: str) -> ApiError:
    assert patient.erased_at is not None
    return ApiError(
        409, "Conflict", detail, type_="patient-erased", erased_at=patient.erased_at.isoformat()
    )


def _role(ctx: Ctx) -> Role:
    assert ctx.staff is not None  # every route here requires a token
    return ctx.staff.role


# -- endpoints -------------------------------------------------------------------------------------


@API.route(
    "GET",
    BASE,
    summary="Search patients by name, mobile or email",
    tag=TAG,
    roles=ALL_STAFF,
    query=PatientSearch,
    response=Page[PatientSummary],
)
async def search_patients(ctx: Ctx) -> Page[PatientSummary]:
    """Compact hits without clinical fields, oldest first, keyset-paginated. Audited as
    `patient.search` with the ids returned."""
    query: PatientSearch = ctx.query
    locale = await _locale(ctx.pool, query.clinic_id, "query")
    mobile = _mobile(query.mobile, locale, "query")
    email = _email(query.email, "query")

    async def work(conn: asyncpg.Connection) -> Any:
        found = await patients.list_page(
            conn,
            clinic_id=locale.clinic_id,
            name=query.name,
            mobile=mobile,
            email=email,
            after_id=query.after_id(),
            limit=query.fetch,
        )
        hits = Page[PatientSummary].of(found, query.limit, _summary)
        filters = sorted(f for f in ("name", "mobile", "email") if getattr(query, f) is not None)
        details = {"filters": filters, "ids": [p.id for p in hits.items]}
        await audit_patient(conn, ctx, "patient.search", None, details=details)
        return hits

    hits = await in_transaction(ctx.pool, work)
    return hits


@API.route(
    "POST",
    BASE,
    summary="Register a patient",
    tag=TAG,
    roles=DESK,
    body=PatientCreate,
    response=PatientOut,
    views=DESK_VIEW,
    status=201,
    location=BASE + "/{id}",
)
async def create_patient(ctx: Ctx) -> PatientOut:
    """Contact fields only: clinicians add the clinical ones. Consents are recorded separately,
    none is assumed."""
    body: PatientCreate = ctx.body
    locale = await _locale(ctx.pool, body.clinic_id, "body")
    mobile = _mobile(body.mobile, locale)
    email = _email(body.email)
    _check_birth_date(body.date_of_birth, locale, ctx.now)

    async def work(conn: asyncpg.Connection) -> Any:
        with _constraint_errors():
            patient_id = await patients.insert(
                conn,
                NewPatient(
                    clinic_id=locale.clinic_id,
                    first_name=body.first_name,
                    last_name=body.last_name,
                    mobile=mobile,
                    email=email,
                    date_of_birth=body.date_of_birth,
                    language=body.language,
                ),
                now=ctx.now,
            )
        await audit_patient(
            conn,
            ctx,
            "patient.create",
            patient_id,
            details={"fields": sorted(body.model_fields_set)},
        )
        return await patient_record(conn, await existing_patient(conn, patient_id))

    return await in_transaction(ctx.pool, work)


@API.route(
    "GET",
    BASE + "/{patient_id}",
    summary="A patient's full record",
    tag=TAG,
    roles=ALL_STAFF,
    response=PatientOut,
    views=DESK_VIEW,
)
async def get_patient(ctx: Ctx) -> PatientOut:
    """With the current consents; the ETag is the version to send back in If-Match. Audited as
    `patient.read`."""
    patient_id = ctx.path["patient_id"]

    async def work(conn: asyncpg.Connection) -> Any:
        record = await patient_record(conn, await existing_patient(conn, patient_id))
        await audit_patient(conn, ctx, "patient.read", patient_id, details={"view": "record"})
        return record

    record = await in_transaction(ctx.pool, work)
    return record


async def _changes(
    conn: asyncpg.Connection, body: PatientPatch, current: Patient, now: datetime
) -> dict[str, Any]:
    """The sent fields, normalised and checked as on creation."""
    changes: dict[str, Any] = {name: getattr(body, name) for name in body.model_fields_set}
    if "mobile" in changes or "date_of_birth" in changes:
        locale = await _locale(conn, current.clinic_id, "body")
        if "mobile" in changes:
            changes["mobile"] = _mobile(changes["mobile"], locale)
        _check_birth_date(changes.get("date_of_birth"), locale, now)
    if "email" in changes:
        changes["email"] = _email(changes["email"])
    if "screening" in changes:
        changes["screening"] = body.screening.model_dump(mode="json", exclude_none=True)
    return changes


@API.route(
    "PATCH",
    BASE + "/{patient_id}",
    summary="Change a patient's contact or clinical fields",
    tag=TAG,
    roles=ALL_STAFF,
    body=PatientPatch,
    response=PatientOut,
    views=DESK_VIEW,
    errors=(409, 412, 428),
)
async def update_patient(ctx: Ctx) -> PatientOut:
    """Needs If-Match with the ETag last read (428 without, 412 when someone changed the record
    since). Audited as `patient.update` with the names of the fields that changed."""
    body: PatientPatch = ctx.body
    patient_id = ctx.path["patient_id"]
    _check_field_roles(_role(ctx), body.model_fields_set)
    expected = ctx.if_match()

    async def work(conn: asyncpg.Connection) -> Any:
        current = await existing_patient(conn, patient_id)
        changes = await _changes(conn, body, current, ctx.now)
        if current.erased_at is not None and changes.keys() & CONTACT_FIELDS:
            raise erased_conflict(
                current, "the patient's contact data was erased; it cannot be set again"
            )
        try:
            with _constraint_errors():
                updated = await patients.update(
                    conn, patient_id, expected_version=expected, changes=changes, now=ctx.now
                )
        except patients.StaleVersion:
            raise precondition_failed(
                "the patient changed since you read it; read it again and redo your change"
            ) from None
        assert updated is not None  # it existed above, and patients are never deleted
        changed = sorted(name for name in changes if getattr(current, name) != changes[name])
        if "screening" in changed:
            # The clinician's answers are real answers too (shared/domain/screening.py).
            await screening_checks.record_patient_edit(
                conn, updated, changes["screening"], actor=ctx.actor.label, now=ctx.now
            )
        await audit_patient(conn, ctx, "patient.update", patient_id, details={"fields": changed})
        return await patient_record(conn, updated)

    return await in_transaction(ctx.pool, work)
