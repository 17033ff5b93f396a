"""Fixtures for the appointment and series admin API: the demo clinic with a patient, and
appointments and courses written straight into the database with the store functions (the
booking endpoints are someone else's work in progress, and not what is under test here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from shared.store import practitioners, series
from shared.store.practitioners import PractitionerFields
from tests import factories
from tests.conftest import BookingApi, Reply

LONDON = ZoneInfo("Europe/London")
HART, PATEL = 1, 2  # demo practitioners: Hart works Monday-Friday, Patel Tuesday-Saturday
# The body of completing a course session: a procedure needs its record (product and lot).
COMPLETION = {"record": {"product": "Dermaheal HL", "lot_number": "TEST-LOT-1"}}


def london(day: date, hour: int = 10, minute: int = 0) -> datetime:
    """A London wall-clock time as an aware UTC instant."""
    return datetime.combine(day, time(hour, minute), tzinfo=LONDON).astimezone(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def paths(reply: Reply) -> set[str]:
    return {error["path"] for error in reply.body.get("errors", [])}


@dataclass
class Desk:
    """The booking API plus helpers to set up appointments and act on them."""

    api: BookingApi
    patient_id: int

    @property
    def pool(self) -> asyncpg.Pool:
        return self.api.pool

    async def treatment_id(self, code: str) -> int:
        return int(await self.pool.fetchval("SELECT id FROM treatment WHERE code = $1", code))

    async def new_patient(self, first_name: str = "Grace") -> int:
        return await factories.patient(
            self.pool,
            clinic_id=self.api.clinic_id,
            first_name=first_name,
            last_name="Hopper",
            mobile=None,
            email=None,
            date_of_birth=None,
            now=self.api.clock.now(),
        )

    async def new_practitioner(self) -> int:
        """A practitioner with no working hours, so that test appointments need not overlap."""
        fields = PractitionerFields(name="Dr Extra")
        return (
            await practitioners.insert(self.pool, clinic_id=self.api.clinic_id, fields=fields)
        ).id

    async def appointment(
        self,
        start: datetime,
        *,
        code: str = "consultation",
        practitioner_id: int = HART,
        status: str = "booked",
        series_id: int | None = None,
        position: int | None = None,
        patient_id: int | None = None,
        needs_review: bool = False,
        review_reasons: list[str] | None = None,
    ) -> int:
        return await factories.appointment(
            self.pool,
            clinic_id=self.api.clinic_id,
            practitioner_id=practitioner_id,
            treatment_id=await self.treatment_id(code),
            patient_id=patient_id or self.patient_id,
            starts_at=start,
            now=self.api.clock.now(),
            status=status,  # type: ignore[arg-type]
            series_id=series_id,
            position=position,
            needs_review=needs_review,
            review_reasons=review_reasons or [],
        )

    async def course(
        self,
        starts: list[datetime],
        *,
        code: str = "hair-mesotherapy",
        statuses: list[str] | None = None,
        practitioner_id: int = HART,
    ) -> tuple[int, list[int]]:
        """A series with one session per start (positions 1, 2, ...)."""
        treatment_id = await self.treatment_id(code)
        planned = int(
            await self.pool.fetchval(
                "SELECT sessions_max FROM treatment WHERE id = $1", treatment_id
            )
        )
        series_id = await series.insert(
            self.pool,
            clinic_id=self.api.clinic_id,
            patient_id=self.patient_id,
            treatment_id=treatment_id,
            planned_sessions=planned,
            now=self.api.clock.now(),
        )
        ids = []
        for position, start in enumerate(starts, start=1):
            status = statuses[position - 1] if statuses else "booked"
            ids.append(
                await self.appointment(
                    start,
                    code=code,
                    status=status,
                    series_id=series_id,
                    position=position,
                    practitioner_id=practitioner_id,
                )
            )
        return series_id, ids

    async def read(self, appointment_id: int, role: str = "front_desk") -> Reply:
        reply = await self.api.call("GET", f"/api/v1/appointments/{appointment_id}", role=role)
        assert reply.status == 200, reply.body
        return reply

    async def version(self, appointment_id: int) -> int:
        return int(
            await self.pool.fetchval(
                "SELECT version FROM appointment WHERE id = $1", appointment_id
            )
        )

    async def act(
        self,
        appointment_id: int,
        action: str,
        *,
        role: str = "front_desk",
        json: Any = None,
        version: int | None = None,
        if_match: str | None = None,
    ) -> Reply:
        """POST an action with If-Match set to the current version (or the one given). A
        check-in without a body re-confirms "no" to every screening question (tests/safety
        tests the re-confirmation itself)."""
        if action == "check-in" and json is None:
            json = {"screening": await factories.screening_all_no(self.pool, self.api.clinic_id)}
        if if_match is None:
            if_match = f'"{version if version is not None else await self.version(appointment_id)}"'
        return await self.api.call(
            "POST",
            f"/api/v1/appointments/{appointment_id}/{action}",
            role=role,
            json=json,
            headers={"If-Match": if_match},
        )

    async def status(self, appointment_id: int) -> str:
        return str(
            await self.pool.fetchval("SELECT status FROM appointment WHERE id = $1", appointment_id)
        )

    async def start(self, appointment_id: int) -> datetime:
        return await self.pool.fetchval(
            "SELECT lower(during) FROM appointment WHERE id = $1", appointment_id
        )

    async def audit(self, action: str, entity_id: int | None = None) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """
            SELECT actor_kind, actor_name, action, entity, entity_id, patient_id, reason, details
            FROM audit_log WHERE action = $1 AND ($2::bigint IS NULL OR entity_id = $2)
            ORDER BY id
            """,
            action,
            entity_id,
        )
        return [dict(r) for r in rows]


@pytest.fixture
async def desk(booking_api: BookingApi) -> Desk:
    patient_id = await factories.patient(
        booking_api.pool,
        clinic_id=booking_api.clinic_id,
        first_name="Ada",
        last_name="Lovelace",
        mobile="+447700900123",
        email=None,
        date_of_birth=None,
        now=booking_api.clock.now(),
    )
    return Desk(booking_api, patient_id)
