"""Staff alerts: who is alerted first, the priority lane ahead of a burst of reminders, quiet
hours and the daily limit not holding them, escalation every 15 minutes until someone
acknowledges, two scheduler replicas escalating once, and an SMS with danger words raising one.
Real PostgreSQL, the notifier on a real socket against the Twilio stand-in and aiosmtpd; the
clock is moved, never slept."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from services.scheduler.app import create_app as create_scheduler
from services.scheduler.escalations import ESCALATE_ALERTS
from shared.config import Settings
from shared.db.pool import APP_ROLE, create_pool
from shared.db.transactions import in_transaction
from shared.domain import alerts
from shared.store import audit, care_team, staff_alerts
from shared.web import REGISTRY
from tests.alerts.conftest import Team, due_reminders, messages_of, raise_one, sweep
from tests.conftest import SmtpSink, StandIn, serve_app
from tests.notifier.conftest import StartNotifier, World, eventually
from tests.notifier.test_sms_replies import Phone
from tests.test_sweeps import _get_json, _runner

BOTH = ["sms", "email"]


async def _outbox(world: World, alert_id: int) -> list[dict[str, object]]:
    rows = await world.pool.fetch(
        """
        SELECT n.kind, n.channel, n.recipient, n.urgent, n.patient_id, n.status
        FROM staff_alert_notification s JOIN notification n ON n.id = s.notification_id
        WHERE s.alert_id = $1 ORDER BY s.id
        """,
        alert_id,
    )
    return [dict(r) for r in rows]


async def _sent(world: World, alert_id: int) -> bool:
    return all(r["status"] in ("sent", "delivered") for r in await _outbox(world, alert_id))


async def test_an_emergency_reaches_the_on_call_clinician_by_sms_and_email_ahead_of_500_reminders(
    world: World, team: Team, start_notifier: StartNotifier, twilio: StandIn, smtp: SmtpSink
) -> None:
    await due_reminders(world, 500)
    alert = await raise_one(world, "emergency")
    # One SMS segment a second: the 250 SMS reminders take minutes of the sender's pace.
    await start_notifier(notifier_concurrency=4, sms_segments_per_second=1)

    await eventually(lambda: _sent(world, alert.id), what="the alert's SMS and email")
    waiting = await world.pool.fetchval(
        "SELECT count(*) FROM notification WHERE kind = 'reminder_24h' AND channel = 'sms' "
        "AND status = 'scheduled'"
    )
    assert waiting >= 200  # the alert did not queue behind them
    rows = await _outbox(world, alert.id)
    assert [(r["channel"], r["recipient"], r["urgent"]) for r in rows] == [
        ("sms", team.on_call.mobile, True),
        ("email", team.on_call.email, True),
    ]
    assert all(r["kind"] == "staff_alert" and r["patient_id"] is None for r in rows)

    assert team.on_call.mobile is not None and team.on_call.email is not None
    (sms,) = twilio.twilio.sent_to(team.on_call.mobile)
    assert f"Emergency alert #{alert.id}" in sms.body
    assert f"/api/v1/alerts/{alert.id}/acknowledge" in sms.body
    # A phone's lock screen: neither the patient's name nor what they reported.
    assert "Alex" not in sms.body and "Morgan" not in sms.body and "fever" not in sms.body
    (email,) = smtp.recorder.emails_to(team.on_call.email)
    assert email.subject is not None and f"Emergency alert #{alert.id}" in email.subject
    assert "Morgan" not in email.subject
    assert f"Patient record #{world.patient_id}" in email.body
    assert "fever and pus" in email.body


async def test_an_urgent_alert_goes_to_the_lists_first_clinician_in_hours_and_on_call_after(
    world: World, team: Team
) -> None:
    async with world.pool.acquire() as conn:
        await care_team.replace_escalation(
            conn,
            world.clinic_id,
            [
                care_team.Step(0, team.admin.id, False),  # not a clinician: not first for urgent
                care_team.Step(1, team.second.id, False),
                care_team.Step(2, None, True),
            ],
        )
    # Monday 09:00 in London: Dr Hart's working hours.
    in_hours = await raise_one(world, "urgent")
    assert in_hours.recipient_member_id == team.second.id
    assert in_hours.callback_due_at == world.clock.now() + timedelta(hours=1)
    assert [(m, c) for m, c, _ in await messages_of(world, in_hours.id)] == [
        (team.second.id, "sms"),
        (team.second.id, "email"),
    ]
    # Monday 20:00: every practitioner has gone home.
    evening = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)
    after_hours = await raise_one(world, "urgent", at=evening)
    assert after_hours.recipient_member_id == team.on_call.id
    assert after_hours.callback_due_at == evening + timedelta(hours=1)
    rows = await _outbox(world, after_hours.id)
    assert [r["recipient"] for r in rows] == [team.on_call.mobile, team.on_call.email]


async def test_an_unacknowledged_alert_goes_to_the_next_person_every_15_minutes_then_the_admin(
    world: World, team: Team, settings: Settings
) -> None:
    alert = await raise_one(world, "urgent")  # in hours: the list's first step, on call
    assert alert.recipient_member_id == team.on_call.id

    world.clock.advance(timedelta(minutes=14, seconds=59))
    assert await sweep(world, settings) == 0
    world.clock.advance(timedelta(seconds=1))
    assert await sweep(world, settings) == 1
    assert await sweep(world, settings) == 0  # a second run at the same minute: nothing more
    expected = [(team.on_call.id, c, "alert") for c in BOTH] + [
        (team.second.id, c, "alert") for c in BOTH
    ]
    assert await messages_of(world, alert.id) == expected

    world.clock.advance(timedelta(minutes=15))
    await sweep(world, settings)
    expected += [(team.third.id, c, "alert") for c in BOTH]
    assert await messages_of(world, alert.id) == expected

    # The end of the list: exhausted, and the clinic admin is told once.
    world.clock.advance(timedelta(minutes=15))
    await sweep(world, settings)
    expected += [(team.admin.id, c, "exhausted") for c in BOTH]
    assert await messages_of(world, alert.id) == expected
    found = await staff_alerts.get(world.pool, alert.id)
    assert found is not None and found.status == "exhausted" and found.escalate_at is None
    world.clock.advance(timedelta(hours=1))
    await sweep(world, settings)
    assert await messages_of(world, alert.id) == expected

    # Still acknowledgeable afterwards.
    async def ack(conn: asyncpg.Connection) -> object:
        return await alerts.acknowledge(
            conn,
            alert.id,
            actor=audit.Actor("staff", 1, "Dr Patel"),
            note="called",
            now=world.clock.now(),
        )

    assert await in_transaction(world.pool, ack) is not None


async def test_acknowledging_stops_the_escalation(
    world: World, team: Team, settings: Settings
) -> None:
    alert = await raise_one(world, "emergency")
    world.clock.advance(timedelta(minutes=10))

    async def ack(conn: asyncpg.Connection) -> object:
        return await alerts.acknowledge(
            conn,
            alert.id,
            actor=audit.Actor("staff", 7, "Dr Hart"),
            note="phoned the patient",
            now=world.clock.now(),
        )

    assert await in_transaction(world.pool, ack) is not None
    world.clock.advance(timedelta(minutes=30))
    assert await sweep(world, settings) == 0
    assert await messages_of(world, alert.id) == [(team.on_call.id, c, "alert") for c in BOTH]
    found = await staff_alerts.get(world.pool, alert.id)
    assert found is not None and found.status == "acknowledged"
    assert found.acknowledged_by == "staff:7" and found.acknowledge_note == "phoned the patient"
    assert found.acknowledged_at == world.clock.now() - timedelta(minutes=30)
    # A second acknowledgement changes nothing.
    assert await in_transaction(world.pool, ack) is None


async def test_two_scheduler_replicas_escalate_an_alert_once(
    world: World, team: Team, settings: Settings, db_url: str
) -> None:
    alerts_raised = [await raise_one(world, "emergency") for _ in range(5)]
    world.clock.advance(timedelta(minutes=15))
    replicas = [await create_pool(db_url, max_size=4, act_as=APP_ROLE) for _ in range(2)]
    try:
        moved = await asyncio.gather(*(sweep(world, settings, pool) for pool in replicas * 2))
    finally:
        for pool in replicas:
            await pool.close()
    assert sum(moved) == 5
    for alert in alerts_raised:
        assert await messages_of(world, alert.id) == [
            (team.on_call.id, c, "alert") for c in BOTH
        ] + [(team.second.id, c, "alert") for c in BOTH]


async def test_quiet_hours_and_the_daily_limit_do_not_hold_alerts(
    world: World, team: Team, start_notifier: StartNotifier, clock: object
) -> None:
    # 02:00 in London, and three alerts the same night: more than the two scheduled messages a
    # day a patient may get, all outside the 08:00-20:00 window.
    night = datetime(2026, 3, 3, 2, 0, tzinfo=UTC)
    world.clock.set(night)
    raised = [await raise_one(world, "emergency") for _ in range(3)]
    reminder = await world.reminder(await world.appointment(night + timedelta(days=1)))
    await start_notifier()
    for alert in raised:
        await eventually(lambda a=alert: _sent(world, a.id), what=f"alert {alert.id}")  # type: ignore[misc]
    sent_at = await world.pool.fetch(
        "SELECT n.sent_at FROM staff_alert_notification s JOIN notification n "
        "ON n.id = s.notification_id"
    )
    assert [r["sent_at"] for r in sent_at] == [night] * 6
    row = await world.row(reminder)
    assert row.status == "scheduled" and row.due_at > night  # the reminder does wait


async def test_an_sms_with_danger_words_raises_an_alert_for_the_on_call_clinician(
    world: World, team: Team, phone: Phone
) -> None:
    answer = await phone.send("I can't breathe")
    assert answer is not None and "999" in answer
    urgent = await phone.send("there is pus on my scalp")
    assert urgent is not None
    rows = await world.pool.fetch(
        "SELECT a.id, a.tier, a.patient_id, a.inbox_item_id, i.urgent FROM staff_alert a "
        "JOIN inbox_item i ON i.id = a.inbox_item_id ORDER BY a.id"
    )
    assert [(r["tier"], r["patient_id"], r["urgent"]) for r in rows] == [
        ("emergency", world.patient_id, True),
        ("urgent", world.patient_id, True),
    ]
    for row in rows:
        sent = await _outbox(world, row["id"])
        assert [r["recipient"] for r in sent] == [team.on_call.mobile, team.on_call.email]
    # From a patient on file each is an adverse event as well, with what they wrote, and the
    # alert names it; the emergency holds their next session until a clinician clears it.
    events = await world.pool.fetch(
        "SELECT e.id, e.tier, e.source, e.symptoms, e.inbound_message_id IS NOT NULL AS linked,"
        " (SELECT a.id FROM staff_alert a WHERE a.adverse_event_id = e.id) AS alert_id"
        " FROM adverse_event e ORDER BY e.id"
    )
    assert [(e["tier"], e["source"], e["symptoms"], e["linked"]) for e in events] == [
        ("emergency", "sms", "I can't breathe", True),
        ("urgent", "sms", "there is pus on my scalp", True),
    ]
    assert [e["alert_id"] for e in events] == [r["id"] for r in rows]
    # Not an alert: an ordinary question.
    await phone.send("Can I wash my hair tonight?")
    assert await world.pool.fetchval("SELECT count(*) FROM staff_alert") == 2


async def test_with_nobody_to_alert_the_alert_still_exists_and_is_counted_unrouted(
    world: World, team: Team, settings: Settings
) -> None:
    await world.pool.execute("DELETE FROM on_call_shift")
    await world.pool.execute("DELETE FROM escalation_step")
    await world.pool.execute("UPDATE care_team_member SET active = false WHERE role = 'admin'")
    alert = await raise_one(world, "emergency")
    assert alert.status == "open" and alert.recipient_member_id is None
    assert await messages_of(world, alert.id) == []
    world.clock.advance(timedelta(minutes=15))
    await sweep(world, settings)
    found = await staff_alerts.get(world.pool, alert.id)
    assert found is not None and found.status == "exhausted"
    assert await staff_alerts.count_unrouted(world.pool) == 1


async def test_the_scheduler_warns_in_readyz_and_metrics_about_an_alert_that_reached_nobody(
    world: World, team: Team, settings: Settings, db_url: str
) -> None:
    await world.pool.execute("DELETE FROM on_call_shift")
    await world.pool.execute("DELETE FROM escalation_step")
    await world.pool.execute("UPDATE care_team_member SET active = false")
    await raise_one(world, "emergency")
    app = create_scheduler(settings, world.clock, db_url, sweeps=[ESCALATE_ALERTS])
    runner, base = await serve_app(app)
    try:
        await _runner(app).wait_for_runs("escalate-alerts", 1)
        status, ready = await _get_json(base + "/readyz")
        assert status == 200 and ready["staff_alerts_unrouted"] == 1
        assert app[REGISTRY].get_sample_value("regimen_staff_alerts_unrouted") == 1
    finally:
        await runner.cleanup()
