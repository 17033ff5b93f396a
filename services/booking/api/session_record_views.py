"""The session record in the JSON API: what a clinician sends (`RecordIn`, with a completion or
on its own) and what clinicians and admins read (`SessionRecordOut`, in an appointment's detail,
the safety timeline and the record's own endpoints). The front desk never reads it.

This module registers no routes."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, StrictBool, StringConstraints

from services.booking.api.fields import Body, Day, Id, LongText, one_line, storable
from shared.store.session_records import FIELD_NAMES, HistoryEntry, RecordFields, SessionRecord


def _line(max_length: int, description: str) -> Any:
    return Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=max_length),
        AfterValidator(storable),
        AfterValidator(one_line),
        Field(description=description),
    ]


Product = _line(200, "the product injected, as named on its packaging")
Formulation = _line(200, "concentration or mix, e.g. 'dutasteride 0.01%'")
LotNumber = _line(100, "the lot or batch number on the vial")
Anaesthetic = _line(200, "e.g. 'lidocaine 2.5% cream'")
Area = _line(100, "an injection area, e.g. 'crown'")


class RecordIn(Body):
    """What was done at the session. A procedure (a course treatment) needs at least `product`
    and `lot_number`; a consultation needs nothing. A `lot_expiry` before the session's local
    date is refused unless `expired_lot_acknowledged` says the expired lot was in fact used."""

    product: Product | None = None
    formulation: Formulation | None = None
    lot_number: LotNumber | None = None
    lot_expiry: Day | None = Field(None, description="the lot's expiry date, YYYY-MM-DD")
    injection_areas: list[Area] = Field(default_factory=list, max_length=20)
    # Kept to 0.01 (the columns' scale): finer is no measurement anyone makes.
    depth_mm: float | None = Field(
        None, ge=0.01, le=20, description="injection depth in mm (kept to 0.01)"
    )
    needle_length_mm: float | None = Field(None, ge=0.01, le=50, description="kept to 0.01")
    volume_ml: float | None = Field(
        None, ge=0.01, le=100, description="total volume in ml (kept to 0.01)"
    )
    anaesthetic: Anaesthetic | None = Field(None, description="none given: leave it out")
    notes: LongText = ""
    performed_by: Id | None = Field(
        None, description="the practitioner who performed it; default: the appointment's"
    )
    expired_lot_acknowledged: StrictBool = Field(
        False, description="the lot had expired by the session's date and was used anyway"
    )

    def fields(self) -> RecordFields:
        return RecordFields(**self.model_dump(include=set(FIELD_NAMES)))


class SessionRecordOut(BaseModel):
    """A session's record as it stands (clinicians and admins); earlier versions are in its
    history."""

    appointment_id: int
    product: str | None
    formulation: str | None
    lot_number: str | None
    lot_expiry: date | None
    injection_areas: list[str]
    depth_mm: float | None
    needle_length_mm: float | None
    volume_ml: float | None
    anaesthetic: str | None
    notes: str
    performed_by: int
    expired_lot_acknowledged: bool
    recorded_by: str = Field(description="who wrote this version")
    recorded_at: datetime
    version: int = Field(description="send it as If-Match to correct the record")


class RecordVersionOut(BaseModel):
    version: int
    at: datetime
    actor: str
    reason: str
    record: dict[str, Any] = Field(description="the record's values in this version")


def record_out(saved: SessionRecord) -> SessionRecordOut:
    return SessionRecordOut(
        appointment_id=saved.appointment_id,
        **asdict(saved.fields),
        recorded_by=saved.recorded_by,
        recorded_at=saved.recorded_at,
        version=saved.version,
    )


def version_out(entry: HistoryEntry) -> RecordVersionOut:
    return RecordVersionOut(**asdict(entry))
