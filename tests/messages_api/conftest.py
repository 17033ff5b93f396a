"""Fixtures for the messages admin API: the demo clinic with one patient and one appointment,
and outbox rows written with the store's `outbox.insert`, then moved to other states, given
attempts and events with plain SQL (standing in for the notifier, which is not what is under
test)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from shared.store import notifications
from tests import factories
from tests.conftest import BookingApi, Reply

MOBILE = "+447700900456"
EMAIL = "ada.lovelace@example.com"
# What a rendered message would hold; it must never come back from the API.
SECRET_TEXT = "scalp-mesotherapy-lidocaine"
HART = 1  # a demo practitioner


@dataclass
class Outbox:
    api: BookingApi
    patient_id: int
    appointment_id: int
    counter: int = 0

    @property
    def pool(self) -> asyncpg.Pool:
        return self.api.pool

    @property
    def now(self) -> datetime:
        return self.api.clock.now()

    async def add(
        self,
        *,
        kind: str = "reminder_24h",
        channel: notifications.rows.Channel = "sms",
        patient_id: int | None = None,
        appointment_id: int | None | bool = True,
        recipient: str | None = None,
        urgent: bool = False,
        expires_at: datetime | None = None,
        status: str = "scheduled",
        **columns: Any,
    ) -> int:
        """One outbox row through `outbox.insert`, then moved to `status` (with an event) if
        asked."""
        self.counter += 1
        appointment = self.appointment_id if appointment_id is True else appointment_id or None
        new_id = await notifications.outbox.insert(
            self.pool,
            notifications.outbox.NewNotification(
                clinic_id=self.api.clinic_id,
                kind=kind,
                channel=channel,
                template=kind,
                due_at=self.now + timedelta(hours=1),
                dedupe_key=f"test:{kind}:{channel}:{self.counter}",
                patient_id=self.patient_id if patient_id is None else patient_id,
                appointment_id=appointment,
                appointment_version=1 if appointment else None,
                recipient=recipient,
                context={"note": SECRET_TEXT, "body": f"Your {SECRET_TEXT} session"},
                expires_at=expires_at,
                urgent=urgent,
            ),
            now=self.now,
        )
        assert new_id is not None
        if status != "scheduled" or columns:
            await self.move(new_id, status, **columns)
        return new_id

    async def move(self, notification_id: int, status: str, **columns: Any) -> None:
        """What a notifier would do: change the row and record the event."""
        async with self.pool.acquire() as conn, conn.transaction():
            before = await conn.fetchval(
                "SELECT status FROM notification WHERE id = $1", notification_id
            )
            await conn.execute(
                """
                UPDATE notification SET status = $2, updated_at = $3,
                    status_reason = COALESCE($4, status_reason),
                    error_code = COALESCE($5, error_code),
                    segments = COALESCE($6, segments),
                    sent_at = COALESCE($7, sent_at),
                    attempts = COALESCE($8, attempts),
                    provider_id = COALESCE($9, provider_id)
                WHERE id = $1
                """,
                notification_id,
                status,
                self.now,
                columns.get("status_reason"),
                columns.get("error_code"),
                columns.get("segments"),
                columns.get("sent_at"),
                columns.get("attempts"),
                columns.get("provider_id"),
            )
            if before != status:
                await conn.execute(
                    """
                    INSERT INTO notification_event (notification_id, at, from_status, to_status,
                                                    reason)
                    VALUES ($1, $2, $3, $4, $5)
                    """,
                    notification_id,
                    self.now,
                    before,
                    status,
                    columns.get("status_reason") or f"test: {status}",
                )

    async def attempt(
        self,
        notification_id: int,
        *,
        outcome: str,
        error_code: int | None = None,
        detail: str = "",
        provider_id: str | None = None,
    ) -> None:
        await self.pool.execute(
            """
            INSERT INTO notification_attempt (notification_id, started_at, finished_at, outcome,
                                              error_code, detail, provider_id, worker)
            VALUES ($1, $2, $2, $3, $4, $5, $6, 'notifier-test')
            """,
            notification_id,
            self.now,
            outcome,
            error_code,
            detail,
            provider_id,
        )

    async def row(self, notification_id: int) -> dict[str, Any]:
        row = await self.pool.fetchrow("SELECT * FROM notification WHERE id = $1", notification_id)
        assert row is not None
        return dict(row)

    async def audit(self, action: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """
            SELECT actor_kind, actor_id, actor_name, action, entity, entity_id, patient_id,
                   reason, details, request_id
            FROM audit_log WHERE action = $1 ORDER BY id
            """,
            action,
        )
        return [dict(r) for r in rows]

    async def staff_id(self, role: str) -> int:
        return int(await self.pool.fetchval("SELECT id FROM staff_token WHERE role = $1", role))

    async def call(
        self,
        method: str,
        path: str,
        *,
        role: str | None = "front_desk",
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: Any = None,
    ) -> Reply:
        return await self.api.call(
            method, path, role=role, json=json, headers=headers, params=params
        )

    async def new_appointment(self, start: datetime, patient_id: int | None = None) -> int:
        treatment_id = int(
            await self.pool.fetchval("SELECT id FROM treatment WHERE code = 'consultation'")
        )
        return await factories.appointment(
            self.pool,
            clinic_id=self.api.clinic_id,
            practitioner_id=HART,
            treatment_id=treatment_id,
            patient_id=patient_id or self.patient_id,
            starts_at=start,
            now=self.now,
        )

    async def new_patient(self, first_name: str, mobile: str | None = None) -> int:
        return await factories.patient(
            self.pool,
            clinic_id=self.api.clinic_id,
            first_name=first_name,
            last_name="Hopper",
            mobile=mobile,
            email=None,
            date_of_birth=None,
            now=self.now,
        )


@pytest.fixture
async def outbox(booking_api: BookingApi) -> Outbox:
    patient_id = await factories.patient(
        booking_api.pool,
        clinic_id=booking_api.clinic_id,
        first_name="Ada",
        last_name="Lovelace",
        mobile=MOBILE,
        email=EMAIL,
        date_of_birth=None,
        now=booking_api.clock.now(),
    )
    box = Outbox(booking_api, patient_id, 0)
    # Tuesday 3 March 2026, 10:00 London (= UTC in winter), the day after the frozen clock.
    box.appointment_id = await box.new_appointment(datetime(2026, 3, 3, 10, 0, tzinfo=UTC))
    return box
