"""Helpers for outbox-planning tests: the booking tests' demo clinic (its `demo` fixture), a
whole mesotherapy course booked through the public API, staff actions with If-Match, and the
outbox read back as plain rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from tests import factories
from tests.booking.conftest import Demo, form, sessions_of
from tests.conftest import BookingApi, Reply

# A Monday a week after the test clock's "now" (2026-03-02 09:00 UTC): every session of the
# course is more than 72 h away, so each gets both default reminders.
FIRST = "2026-03-09T10:00:00Z"
ALL_CONSENTS = {
    "care_sms": True,
    "care_email": True,
    "marketing_sms": False,
    "marketing_email": False,
}
NO_CONSENTS = dict.fromkeys(ALL_CONSENTS, False)


@pytest.fixture
async def demo(booking_api: BookingApi) -> Demo:
    """The booking tests' demo clinic (the same as their `demo` fixture)."""
    # Booking mechanics, not the consultation gate (tests/safety): courses need none here.
    await factories.courses_without_consultation(booking_api.pool)
    codes = dict(await booking_api.pool.fetch("SELECT code, id FROM treatment"))
    return Demo(
        booking_api,
        booking_api.pool,
        booking_api.clinic_id,
        codes["consultation"],
        codes["hair-mesotherapy"],
        codes["prp-hair"],
    )


@dataclass(frozen=True)
class Row:
    id: int
    patient_id: int | None
    appointment_id: int | None
    appointment_version: int | None
    kind: str
    channel: str
    due_at: datetime
    expires_at: datetime | None
    dedupe_key: str
    status: str
    status_reason: str | None
    urgent: bool
    context: dict[str, Any]


async def outbox(pool: asyncpg.Pool) -> list[Row]:
    rows = await pool.fetch(
        """
        SELECT id, patient_id, appointment_id, appointment_version, kind, channel, due_at,
               expires_at, dedupe_key, status, status_reason, urgent, context
        FROM notification ORDER BY id
        """
    )
    return [Row(**dict(r)) for r in rows]


async def book_course(
    demo: Demo,
    *,
    first: str = FIRST,
    consents: dict[str, bool] | None = None,
    headers: dict[str, str] | None = None,
    **patient: Any,
) -> Reply:
    """Hold and book the 8-session mesotherapy course from `first` through the public API."""
    proposal = await demo.propose(demo.mesotherapy, first)
    assert proposal.status == 200 and proposal.body["complete"], proposal.body
    hold = await demo.hold(demo.mesotherapy, sessions_of(proposal.body))
    assert hold.status == 201, hold.body
    body = {
        "hold_token": hold.body["token"],
        "patient": form(**patient),
        "consents": consents if consents is not None else ALL_CONSENTS,
    }
    return await demo.call("POST", "/api/v1/public/bookings", json=body, headers=headers)


async def booked_ids(reply: Reply) -> list[int]:
    assert reply.status == 201, reply.body
    return [a["id"] for a in reply.body["appointments"]]


async def act(demo: Demo, appointment_id: int, action: str, body: dict[str, Any]) -> Reply:
    """A staff action on an appointment at its current version (If-Match)."""
    version = await demo.pool.fetchval(
        "SELECT version FROM appointment WHERE id = $1", appointment_id
    )
    return await demo.call(
        "POST",
        f"/api/v1/appointments/{appointment_id}/{action}",
        role="admin",
        json=body,
        headers={"If-Match": f'"{version}"'},
    )


async def starts(pool: asyncpg.Pool, appointment_id: int) -> datetime:
    return await pool.fetchval(
        "SELECT lower(during) FROM appointment WHERE id = $1", appointment_id
    )


async def version(pool: asyncpg.Pool, appointment_id: int) -> int:
    return int(await pool.fetchval("SELECT version FROM appointment WHERE id = $1", appointment_id))


async def consenting_patient(
    demo: Demo,
    first_name: str,
    *,
    mobile: str | None = "+447700900001",
    email: str | None = None,
    care_sms: bool = True,
    care_email: bool = False,
) -> int:
    """A patient staff created, with their care consents recorded."""
    now = demo.api.clock.now()
    patient_id = await factories.patient(
        demo.pool,
        clinic_id=demo.clinic_id,
        first_name=first_name,
        last_name="Tester",
        mobile=mobile,
        email=email,
        date_of_birth=None,
        now=now,
    )
    await factories.consent(
        demo.pool,
        patient_id,
        {"care_sms": care_sms, "care_email": care_email},
        source="front desk",
        wording_version="test",
        now=now,
    )
    return patient_id
