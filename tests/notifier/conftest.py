"""Helpers for the notifier's dispatch tests: the demo clinic with one consenting patient,
appointments and outbox rows written through the stores, notifier apps on real sockets against
the Twilio stand-in and aiosmtpd, and a stand-in whose message creation can be held at a gate
(to race a cancel against a send in flight)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from services.devkit.demo_data import seed_demo_data
from services.devkit.twilio_standin import TwilioStandIn
from services.notifier.app import create_app
from services.notifier.dispatch import DISPATCHER, Dispatcher
from shared.clock import FrozenClock
from shared.config import DEV_TWILIO_ACCOUNT_SID, Settings
from shared.store import appointments, notifications
from shared.store.appointments import Appointment
from shared.store.notifications.outbox import NewNotification
from shared.store.notifications.rows import Notification
from shared.web import REGISTRY
from tests import factories
from tests.conftest import StandIn, serve_app

MOBILE = "+447700900123"
EMAIL = "alex@example.com"


class GatedStandIn(TwilioStandIn):
    """The stand-in, with a gate before message creation that tests may close."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.gate.set()
        self.arrived = asyncio.Event()  # a create request is waiting at the closed gate

    async def _create(self, request: web.Request) -> web.Response:
        if not self.gate.is_set():
            self.arrived.set()
            await self.gate.wait()
        return await super()._create(request)


@pytest.fixture
async def twilio() -> AsyncIterator[StandIn]:
    standin = GatedStandIn(DEV_TWILIO_ACCOUNT_SID, "test-auth-token", callback_delay=0.01)
    runner, url = await serve_app(standin.make_app())
    yield StandIn(standin, url)
    await runner.cleanup()


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 15.0, what: str = "condition"
) -> None:
    """Wait for `check` to hold (a bound against hanging, not a timing assertion)."""
    for _ in range(int(within / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what} not reached")


@dataclass
class World:
    pool: asyncpg.Pool
    clock: FrozenClock
    clinic_id: int
    practitioner_id: int
    treatment_id: int
    patient_id: int
    _serial: list[int] = field(default_factory=lambda: [0])

    def _next(self) -> int:
        self._serial[0] += 1
        return self._serial[0]

    async def new_patient(
        self,
        *,
        mobile: str | None = MOBILE,
        email: str | None = EMAIL,
        consent: bool = True,
        first_name: str = "Alex",
    ) -> int:
        now = self.clock.now()
        patient_id = await factories.patient(
            self.pool,
            clinic_id=self.clinic_id,
            first_name=first_name,
            last_name="Morgan",
            mobile=mobile,
            email=email,
            date_of_birth=None,
            now=now,
        )
        await factories.consent(
            self.pool, patient_id, {"care_sms": consent, "care_email": consent}, now=now
        )
        return patient_id

    async def appointment(
        self,
        starts_at: datetime,
        *,
        patient_id: int | None = None,
        practitioner_id: int | None = None,
    ) -> Appointment:
        appointment_id = await factories.appointment(
            self.pool,
            clinic_id=self.clinic_id,
            practitioner_id=practitioner_id or self.practitioner_id,
            treatment_id=self.treatment_id,  # the consultation: 30 minutes, no buffers
            patient_id=patient_id or self.patient_id,
            starts_at=starts_at,
            now=self.clock.now(),
        )
        found = await appointments.get(self.pool, appointment_id)
        assert found is not None
        return found

    async def reminder(
        self,
        appointment: Appointment,
        *,
        kind: str = "reminder_24h",
        channel: str = "sms",
        due_at: datetime | None = None,
        urgent: bool = False,
    ) -> int:
        """A reminder as the planner writes it (the start it was planned for in its context)."""
        return await self._enqueue(
            NewNotification(
                clinic_id=self.clinic_id,
                kind=kind,
                channel=channel,  # type: ignore[arg-type]
                template=kind,
                due_at=due_at or self.clock.now(),
                dedupe_key=f"{kind}:{channel}:appt{appointment.id}:v{appointment.version}",
                patient_id=appointment.patient_id,
                appointment_id=appointment.id,
                appointment_version=appointment.version,
                context={"starts_at": appointment.starts_at.isoformat()},
                expires_at=appointment.starts_at,
                urgent=urgent,
            )
        )

    async def reply(
        self,
        text: str,
        *,
        channel: str = "sms",
        patient_id: int | None = None,
        due_at: datetime | None = None,
        expires_at: datetime | None = None,
        urgent: bool = False,
    ) -> int:
        """A free-text answer to the patient (distinct texts make distinct messages)."""
        return await self._enqueue(
            NewNotification(
                clinic_id=self.clinic_id,
                kind="reply",
                channel=channel,  # type: ignore[arg-type]
                template="reply",
                due_at=due_at or self.clock.now(),
                dedupe_key=f"reply:{channel}:{self._next()}:{text}",
                patient_id=patient_id or self.patient_id,
                context={"text": text},
                expires_at=expires_at,
                urgent=urgent,
            )
        )

    async def _enqueue(self, item: NewNotification) -> int:
        notification_id = await notifications.outbox.insert(self.pool, item, now=self.clock.now())
        assert notification_id is not None
        return notification_id

    async def row(self, notification_id: int) -> Notification:
        found = await notifications.rows.get(self.pool, notification_id)
        assert found is not None
        return found

    async def settled(
        self, notification_id: int, *statuses: str, within: float = 15.0
    ) -> Notification:
        """The row once it reaches one of `statuses`."""

        async def reached() -> bool:
            return (await self.row(notification_id)).status in statuses

        await eventually(reached, within=within, what=f"notification {notification_id} {statuses}")
        return await self.row(notification_id)

    async def reasons(self, notification_id: int) -> list[tuple[str | None, str, str]]:
        rows = await self.pool.fetch(
            "SELECT from_status, to_status, reason FROM notification_event "
            "WHERE notification_id = $1 ORDER BY id",
            notification_id,
        )
        return [(r["from_status"], r["to_status"], r["reason"]) for r in rows]

    async def attempts(self, notification_id: int) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT * FROM notification_attempt WHERE notification_id = $1 ORDER BY id",
            notification_id,
        )
        return [dict(r) for r in rows]


@pytest.fixture
async def world(pool: asyncpg.Pool, clock: FrozenClock) -> World:
    async with pool.acquire() as conn:
        await seed_demo_data(conn)
    clinic_id = int(await pool.fetchval("SELECT min(id) FROM clinic"))
    practitioner_id = int(await pool.fetchval("SELECT min(id) FROM practitioner"))
    treatment_id = int(await pool.fetchval("SELECT id FROM treatment WHERE code = 'consultation'"))
    world = World(pool, clock, clinic_id, practitioner_id, treatment_id, 0)
    world.patient_id = await world.new_patient()
    return world


@dataclass
class Notifier:
    app: web.Application
    runner: web.AppRunner
    base: str

    @property
    def dispatcher(self) -> Dispatcher:
        return self.app[DISPATCHER]

    async def stop(self) -> None:
        await self.runner.cleanup()

    def _recoveries(self) -> float:
        registry = self.app[REGISTRY]
        return sum(
            registry.get_sample_value(
                "regimen_sweep_runs_total", {"sweep": "notifier-recover", "outcome": outcome}
            )
            or 0
            for outcome in ("ok", "error", "skipped")
        )

    async def advance(self, clock: FrozenClock, delta: timedelta) -> None:
        """Move the clock and wait for the recovery sweep run that the jump sets off."""
        before = self._recoveries()
        clock.advance(delta)

        async def ran() -> bool:
            return self._recoveries() > before

        await eventually(ran, what="a recovery sweep after the clock moved")


StartNotifier = Callable[..., Awaitable[Notifier]]


@pytest.fixture
async def start_notifier(
    settings: Settings, clock: FrozenClock, db_url: str, twilio: StandIn
) -> AsyncIterator[StartNotifier]:
    """Start notifier apps (rate limit off unless asked); the stand-in's status callbacks go to
    the first one. Every app started is stopped at the end."""
    started: list[Notifier] = []

    async def start(**overrides: Any) -> Notifier:
        values: dict[str, Any] = {"sms_segments_per_second": 0}
        values.update(overrides)
        app = create_app(settings.with_overrides(**values), clock, db_url)
        runner, base = await serve_app(app)
        notifier = Notifier(app, runner, base)
        if not started:
            callbacks = settings.twilio_callback_base
            twilio.twilio.route_webhook = lambda url: url.replace(callbacks, base)
        started.append(notifier)
        await eventually(
            _listening(notifier), within=10, what="the dispatcher listening for NOTIFY"
        )
        # Sweeps run once at start; a clock jump while that run is still going would be skipped.
        await eventually(_swept(notifier), within=10, what="the first sweeps")
        return notifier

    yield start
    for notifier in reversed(started):
        await notifier.runner.cleanup()


SWEEPS = ("notifier-recover", "notifier-expire", "notifier-queue-depth")


def _swept(notifier: Notifier) -> Callable[[], Awaitable[bool]]:
    registry = notifier.app[REGISTRY]

    async def check() -> bool:
        return all(
            sum(
                registry.get_sample_value(
                    "regimen_sweep_runs_total", {"sweep": name, "outcome": outcome}
                )
                or 0
                for outcome in ("ok", "error", "skipped")
            )
            >= 1
            for name in SWEEPS
        )

    return check


def _listening(notifier: Notifier) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return notifier.dispatcher.listening.is_set()

    return check
