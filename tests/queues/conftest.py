"""Fixtures for the staff work queues (inbox, call list, review queue, conversation, the clinic's
day, undoing a no-show): the demo clinic with a patient, and inbound SMS filed the way the reply
handler files them (inbound_messages.insert, then inbox.insert or call_tasks.file), with the
handler's own columns (handled_as, answer) written in plain SQL where a test needs them: the
handler is someone else's work in progress, and not what is under test here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from shared.store import call_tasks, inbound_messages, inbox, series
from shared.store.call_tasks import CallReason
from shared.store.inbox import InboxReason
from tests import factories
from tests.conftest import BookingApi, Reply

LONDON = ZoneInfo("Europe/London")
HART, PATEL = 1, 2
MOBILE = "+447700900456"
CLINIC_NUMBER = "+447700900000"


def london(day: date, hour: int = 10, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=LONDON).astimezone(UTC)


@dataclass
class Queues:
    api: BookingApi
    patient_id: int
    counter: int = 0

    @property
    def pool(self) -> asyncpg.Pool:
        return self.api.pool

    @property
    def now(self) -> datetime:
        return self.api.clock.now()

    @property
    def clinic_id(self) -> int:
        return self.api.clinic_id

    async def call(
        self, method: str, path: str, *, role: str | None = "front_desk", **kwargs: Any
    ) -> Reply:
        return await self.api.call(method, path, role=role, **kwargs)

    async def new_patient(
        self, first_name: str = "Grace", mobile: str | None = None, **fields: Any
    ) -> int:
        return await factories.patient(
            self.pool,
            clinic_id=self.clinic_id,
            first_name=first_name,
            last_name="Hopper",
            mobile=mobile,
            email=None,
            date_of_birth=None,
            now=self.now,
            **fields,
        )

    async def sms(
        self,
        body: str,
        *,
        from_number: str = MOBILE,
        received_at: datetime | None = None,
        patient_id: int | None = None,
        clinic_id: int | None = None,
        handled_as: str | None = None,
        answer: str | None = None,
    ) -> int:
        """One inbound SMS as the webhook stores it; the handler's columns if given."""
        self.counter += 1
        message_id = await inbound_messages.insert(
            self.pool,
            message_sid=f"SM{self.counter:032d}",
            from_number=from_number,
            to_number=CLINIC_NUMBER,
            body=body,
            opt_out_type=None,
            received_at=received_at or self.now,
        )
        assert message_id is not None
        await self.pool.execute(
            """
            UPDATE inbound_message SET patient_id = $2, clinic_id = $3, handled_as = $4,
                   answer = $5
            WHERE id = $1
            """,
            message_id,
            patient_id,
            clinic_id,
            handled_as,
            answer,
        )
        return message_id

    async def inbox_item(
        self,
        body: str = "can I wash my hair tonight?",
        *,
        patient_id: int | None | bool = True,
        from_number: str = MOBILE,
        reason: InboxReason = "free_text",
        danger_words: tuple[str, ...] = (),
        at: datetime | None = None,
        clinic_id: int | None | bool = True,
    ) -> int:
        """A message filed in the inbox (True: the fixture's patient, the demo clinic)."""
        patient = self.patient_id if patient_id is True else patient_id or None
        clinic = self.clinic_id if clinic_id is True else clinic_id or None
        when = at or self.now
        message_id = await self.sms(
            body,
            from_number=from_number,
            received_at=when,
            patient_id=patient,
            clinic_id=clinic,
            handled_as="inbox",
        )
        return await inbox.insert(
            self.pool,
            clinic_id=clinic,
            patient_id=patient,
            inbound_message_id=message_id,
            reason=reason,
            danger_words=danger_words,
            now=when,
        )

    async def treatment_id(self, code: str) -> int:
        return int(await self.pool.fetchval("SELECT id FROM treatment WHERE code = $1", code))

    async def appointment(
        self,
        start: datetime,
        *,
        code: str = "consultation",
        practitioner_id: int = HART,
        status: str = "booked",
        patient_id: int | None = None,
        series_id: int | None = None,
        position: int | None = None,
        needs_review: bool = False,
        review_reasons: list[str] | None = None,
    ) -> int:
        return await factories.appointment(
            self.pool,
            clinic_id=self.clinic_id,
            practitioner_id=practitioner_id,
            treatment_id=await self.treatment_id(code),
            patient_id=patient_id or self.patient_id,
            starts_at=start,
            now=self.now,
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
        patient_id: int | None = None,
        flagged: tuple[int, ...] = (),
        statuses: list[str] | None = None,
    ) -> tuple[int, list[int]]:
        """A hair-mesotherapy course, one session per start; `flagged`: the positions (1-based)
        that need review."""
        patient = patient_id or self.patient_id
        treatment_id = await self.treatment_id("hair-mesotherapy")
        series_id = await series.insert(
            self.pool,
            clinic_id=self.clinic_id,
            patient_id=patient,
            treatment_id=treatment_id,
            planned_sessions=len(starts),
            now=self.now,
        )
        ids = []
        for position, start in enumerate(starts, start=1):
            ids.append(
                await self.appointment(
                    start,
                    code="hair-mesotherapy",
                    patient_id=patient,
                    series_id=series_id,
                    position=position,
                    status=statuses[position - 1] if statuses else "booked",
                    needs_review=position in flagged,
                    review_reasons=["screening: on blood thinners"] if position in flagged else [],
                )
            )
        return series_id, ids

    async def call_task(
        self,
        appointment_id: int,
        *,
        reason: CallReason = "not_confirmed",
        detail: str = "",
        patient_id: int | None = None,
        at: datetime | None = None,
    ) -> int:
        task_id = await call_tasks.file(
            self.pool,
            clinic_id=self.clinic_id,
            patient_id=patient_id or self.patient_id,
            appointment_id=appointment_id,
            reason=reason,
            detail=detail,
            now=at or self.now,
        )
        assert task_id is not None
        return task_id

    async def audit(self, action: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """
            SELECT actor_name, action, entity, entity_id, patient_id, reason, details
            FROM audit_log WHERE action = $1 ORDER BY id
            """,
            action,
        )
        return [dict(r) for r in rows]

    async def notification(self, notification_id: int) -> dict[str, Any]:
        row = await self.pool.fetchrow("SELECT * FROM notification WHERE id = $1", notification_id)
        assert row is not None
        return dict(row)


@pytest.fixture
async def queues(booking_api: BookingApi) -> Queues:
    patient_id = await factories.patient(
        booking_api.pool,
        clinic_id=booking_api.clinic_id,
        first_name="Ada",
        last_name="Lovelace",
        mobile=MOBILE,
        email="ada@example.com",
        date_of_birth=None,
        now=booking_api.clock.now(),
    )
    return Queues(booking_api, patient_id)


def later(queues: Queues, **delta: float) -> datetime:
    return queues.now + timedelta(**delta)
