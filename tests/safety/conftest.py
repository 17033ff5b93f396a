"""The demo clinic as it is seeded (its courses need a consultation first), with helpers for the
safety-gate tests: public holds and bookings, staff bookings, and appointment actions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from tests import factories
from tests.booking.conftest import CONSENTS, form
from tests.conftest import BookingApi, Reply

# The demo patient of tests.booking.conftest.form(), as stored.
FORM_MOBILE = "+447911123456"
COURSE_START = "2026-03-03T10:00:00Z"  # Tuesday 10:00 London; the clock is Monday 09:00


@dataclass
class Clinic:
    api: BookingApi

    @property
    def pool(self) -> asyncpg.Pool:
        return self.api.pool

    @property
    def now(self) -> datetime:
        return self.api.clock.now()

    async def treatment(self, code: str) -> int:
        return int(await self.pool.fetchval("SELECT id FROM treatment WHERE code = $1", code))

    async def patient(self, first_name: str = "Ada", mobile: str | None = None) -> int:
        return await factories.patient(
            self.pool,
            clinic_id=self.api.clinic_id,
            first_name=first_name,
            last_name="Lovelace",
            mobile=mobile,
            email=None,
            date_of_birth=None,
            now=self.now,
        )

    async def public_course(
        self, code: str = "hair-mesotherapy", start: str = COURSE_START
    ) -> Reply:
        """Hold the course proposed from `start` and book it for form()'s patient."""
        proposal = await self.api.call(
            "GET",
            "/api/v1/public/course-proposal",
            params={
                "treatment_id": await self.treatment(code),
                "practitioner_id": 1,
                "first_start": start,
            },
        )
        assert proposal.status == 200, proposal.body
        sessions = [
            {"practitioner_id": s["practitioner_id"], "start": s["start"]}
            for s in proposal.body["sessions"]
        ]
        hold = await self.api.call(
            "POST",
            "/api/v1/public/holds",
            json={"treatment_id": await self.treatment(code), "sessions": sessions},
        )
        assert hold.status == 201, hold.body
        return await self.api.call(
            "POST",
            "/api/v1/public/bookings",
            json={"hold_token": hold.body["token"], "patient": form(), "consents": CONSENTS},
        )

    async def staff_book(
        self,
        patient_id: int,
        code: str,
        start: datetime,
        *,
        role: str = "front_desk",
        **extra: Any,
    ) -> Reply:
        return await self.api.call(
            "POST",
            "/api/v1/bookings",
            role=role,
            json={
                "patient_id": patient_id,
                "treatment_id": await self.treatment(code),
                "sessions": [{"practitioner_id": 1, "start": start.astimezone(UTC).isoformat()}],
                **extra,
            },
        )

    async def version(self, appointment_id: int) -> int:
        return int(
            await self.pool.fetchval(
                "SELECT version FROM appointment WHERE id = $1", appointment_id
            )
        )

    async def act(
        self, appointment_id: int, action: str, *, role: str = "front_desk", json: Any = None
    ) -> Reply:
        return await self.api.call(
            "POST",
            f"/api/v1/appointments/{appointment_id}/{action}",
            role=role,
            json=json,
            headers={"If-Match": f'"{await self.version(appointment_id)}"'},
        )

    async def all_no(self) -> dict[str, bool]:
        return await factories.screening_all_no(self.pool, self.api.clinic_id)


@pytest.fixture
async def clinic(booking_api: BookingApi) -> Clinic:
    return Clinic(booking_api)
