"""Helpers for booking tests: the demo clinic's treatment ids, a patient form, time off, and a
check that no two active appointments of one practitioner overlap."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from shared.store import time_off
from tests import factories
from tests.conftest import BookingApi, Reply

CONSENTS = {
    "care_sms": True,
    "care_email": True,
    "marketing_sms": False,
    "marketing_email": False,
}


@dataclass
class Demo:
    api: BookingApi
    pool: asyncpg.Pool
    clinic_id: int
    consultation: int
    mesotherapy: int
    prp: int

    async def call(self, method: str, path: str, **kwargs: Any) -> Reply:
        return await self.api.call(method, path, **kwargs)

    async def hold(self, treatment_id: int, sessions: list[dict[str, Any]], **kw: Any) -> Reply:
        return await self.call(
            "POST",
            "/api/v1/public/holds",
            json={"treatment_id": treatment_id, "sessions": sessions},
            **kw,
        )

    async def book(self, token: str, patient: dict[str, Any] | None = None, **kw: Any) -> Reply:
        return await self.call(
            "POST",
            "/api/v1/public/bookings",
            json={"hold_token": token, "patient": patient or form(), "consents": CONSENTS},
            **kw,
        )

    async def propose(self, treatment_id: int, first_start: str, practitioner_id: int = 1) -> Reply:
        return await self.call(
            "GET",
            "/api/v1/public/course-proposal",
            params={
                "treatment_id": treatment_id,
                "practitioner_id": practitioner_id,
                "first_start": first_start,
            },
        )

    async def free_starts(self, treatment_id: int, practitioner: str, day: str) -> list[str]:
        reply = await self.call(
            "GET",
            "/api/v1/public/availability",
            params={
                "treatment_id": treatment_id,
                "practitioner": practitioner,
                "from": day,
                "to": day,
            },
        )
        assert reply.status == 200, reply.body
        return [slot["start"] for d in reply.body["days"] for slot in d["slots"]]

    async def patient(self, first_name: str = "Pat", mobile: str | None = None) -> int:
        return await factories.patient(
            self.pool,
            clinic_id=self.clinic_id,
            first_name=first_name,
            last_name="Staffbooked",
            mobile=mobile,
            email=None,
            date_of_birth=None,
            now=self.api.clock.now(),
        )


def form(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "mobile": "07911 123456",
        "email": "ada@example.com",
        "date_of_birth": "1985-12-10",
        "allergies": "",
        "medications": "none",
        "screening": {"blood_thinners": False, "pregnant": False, "scalp_infection": "no"},
    }
    base.update(overrides)
    return base


@pytest.fixture
async def demo(booking_api: BookingApi) -> Demo:
    pool = booking_api.pool
    # Booking mechanics, not the consultation gate (tests/safety): courses need none here.
    await factories.courses_without_consultation(pool)
    codes = dict(await pool.fetch("SELECT code, id FROM treatment"))
    return Demo(
        booking_api,
        pool,
        booking_api.clinic_id,
        codes["consultation"],
        codes["hair-mesotherapy"],
        codes["prp-hair"],
    )


async def add_time_off(
    pool: asyncpg.Pool, practitioner_id: int, start: datetime, end: datetime
) -> None:
    await time_off.insert(pool, practitioner_id, starts_at=start, ends_at=end, reason="", now=start)


async def overlapping_active_pairs(pool: asyncpg.Pool) -> int:
    return int(
        await pool.fetchval(
            """
            SELECT count(*) FROM appointment a JOIN appointment b
              ON a.id < b.id AND a.practitioner_id = b.practitioner_id AND a.blocked && b.blocked
            WHERE a.status IN ('held', 'booked', 'confirmed', 'checked_in')
              AND b.status IN ('held', 'booked', 'confirmed', 'checked_in')
            """
        )
    )


def sessions_of(proposal: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"practitioner_id": s["practitioner_id"], "start": s["start"]} for s in proposal["sessions"]
    ]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


MINUTE = timedelta(minutes=1)
