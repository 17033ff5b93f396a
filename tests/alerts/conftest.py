"""Helpers for the staff-alert tests: the demo clinic and its demo care team (Dr Hart on call,
the escalation list "whoever is on call, Dr Patel, Nurse Reid", an admin), a burst of reminders
due at once, and the escalation sweep run as the scheduler runs it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg
import pytest

from services.scheduler.sweeps import default_sweeps
from shared.config import Settings
from shared.db.transactions import in_transaction
from shared.domain import alerts
from shared.store import care_team, staff_alerts
from shared.store.care_team import Member
from shared.store.staff_alerts import StaffAlert
from tests.notifier import conftest as notifier_fixtures
from tests.notifier import test_sms_replies
from tests.notifier.conftest import World

# The notifier tests' fixtures, shared: the demo world, notifier apps, the Twilio stand-in, and a
# patient's phone posting signed webhooks.
world = notifier_fixtures.world
start_notifier = notifier_fixtures.start_notifier
twilio = notifier_fixtures.twilio
phone = test_sms_replies.phone


@dataclass(frozen=True)
class Team:
    on_call: Member  # Dr Hart, also the list's first step (through "on call")
    second: Member  # Dr Patel
    third: Member  # Nurse Reid
    admin: Member


@pytest.fixture
async def team(world: World) -> Team:
    members = {m.name: m for m in await care_team.members_of(world.pool, world.clinic_id)}
    return Team(
        members["Dr Amelia Hart"],
        members["Dr Samir Patel"],
        members["Nurse Jo Reid"],
        members["Priya Shah (clinic admin)"],
    )


async def raise_one(
    world: World,
    tier: Literal["emergency", "urgent"],
    *,
    at: datetime | None = None,
    patient_id: int | None = None,
) -> StaffAlert:
    async def work(conn: asyncpg.Connection) -> StaffAlert:
        return await alerts.raise_alert(
            conn,
            clinic_id=world.clinic_id,
            tier=tier,
            patient_id=patient_id or world.patient_id,
            now=at or world.clock.now(),
            summary="Answer 3 to the 24 h check-in: fever and pus",
        )

    return await in_transaction(world.pool, work)


async def sweep(world: World, settings: Settings, pool: asyncpg.Pool | None = None) -> int:
    """One run of the scheduler's escalation sweep, found by name among its sweeps."""
    (escalation,) = [s for s in default_sweeps(settings) if s.name == "escalate-alerts"]
    return await escalation.run(pool or world.pool, world.clock)


async def messages_of(world: World, alert_id: int) -> list[tuple[int | None, str, str]]:
    """(member, channel, purpose) of every message the alert sent, in order."""
    return [
        (n.member_id, n.channel, n.purpose)
        for n in await staff_alerts.notifications_of(world.pool, alert_id)
    ]


async def due_reminders(world: World, count: int) -> None:
    """`count` patients with consents and a session in two days, each with a 24 h reminder due
    now (SMS and email alternating), as a busy minute of the planner leaves them."""
    conn: asyncpg.Connection
    async with world.pool.acquire() as conn:
        first = int(await conn.fetchval("SELECT coalesce(max(id), 0) + 1 FROM patient"))
        await conn.execute(
            """
            INSERT INTO patient (clinic_id, first_name, last_name, mobile, email, created_at,
                                 updated_at)
            SELECT $1, 'Pat', 'No ' || n, '+4479' || lpad(n::text, 8, '0'),
                   'patient' || n || '@example.test', $3, $3
            FROM generate_series(1, $2) AS n
            """,
            world.clinic_id,
            count,
            world.clock.now(),
        )
        await conn.execute(
            """
            INSERT INTO patient_consent (patient_id, kind, granted, source, wording_version,
                                         recorded_at)
            SELECT p.id, k, true, 'test', 'test', $2
            FROM patient p CROSS JOIN unnest(ARRAY['care_sms', 'care_email']) AS k
            WHERE p.id >= $1
            """,
            first,
            world.clock.now(),
        )
        await conn.execute(
            """
            INSERT INTO appointment (clinic_id, practitioner_id, treatment_id, patient_id, status,
                                     during, blocked, source, status_changed_at, created_at)
            SELECT $2, $3, $4, p.id, 'booked',
                   tstzrange(s, s + interval '30 minutes'), tstzrange(s, s + interval '30 minutes'),
                   'test', $5, $5
            FROM (SELECT id, $5::timestamptz + interval '2 days'
                             + (id - $1) * interval '30 minutes' AS s
                  FROM patient WHERE id >= $1) AS p
            """,
            first,
            world.clinic_id,
            world.practitioner_id,
            world.treatment_id,
            world.clock.now(),
        )
        await conn.execute(
            """
            INSERT INTO notification (clinic_id, patient_id, appointment_id, kind, channel,
                template, context, appointment_version, due_at, expires_at, dedupe_key,
                created_at, updated_at)
            SELECT a.clinic_id, a.patient_id, a.id, 'reminder_24h',
                   CASE WHEN a.patient_id % 2 = 0 THEN 'sms' ELSE 'email' END, 'reminder_24h',
                   jsonb_build_object('starts_at', lower(a.during)), a.version, $2,
                   lower(a.during), 'burst:' || a.id, $2, $2
            FROM appointment a WHERE a.patient_id >= $1 AND a.source = 'test'
            """,
            first,
            world.clock.now(),
        )
