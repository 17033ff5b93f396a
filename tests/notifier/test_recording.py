"""An email's acceptance, handed to the database by the outcome writer before the next email may
be accepted: it is committed even if the notifier dies the moment the hand-over returns."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from prometheus_client import CollectorRegistry

from services.notifier import outcomes
from services.notifier.metrics import create_metrics
from services.notifier.recording import OutcomeWriter
from shared.db.pool import APP_ROLE, create_pool
from shared.store import notifications
from shared.store.notifications.dispatch import LaneKey
from tests.notifier.conftest import EMAIL, World, eventually

LEASE = timedelta(seconds=120)
RULES = outcomes.RetryRules(timedelta(seconds=30), 5)


async def _email_being_sent(world: World) -> tuple[int, int]:
    """A worker's email at the point of the SMTP call: claimed, its attempt committed."""
    notification_id = await world.reply("Hello", channel="email")
    [claimed] = await notifications.dispatch.claim_due(
        world.pool,
        lane=LaneKey("email", False),
        now=world.clock.now(),
        lease=LEASE,
        worker="writer-test",
        limit=1,
    )
    decision = await notifications.dispatch.decide_sends(
        world.pool,
        [
            notifications.dispatch.SendCandidate(
                notifications.dispatch.AttemptStart(
                    claimed.id, hashlib.sha256(b"Hello").digest(), {"attempt_to": EMAIL}
                ),
                covered=[],
                seen_versions={},
            )
        ],
        worker="writer-test",
        now=world.clock.now(),
        lease=LEASE,
    )
    return notification_id, decision.attempts[notification_id]


async def _acceptance(world: World, notification_id: int, attempt_id: int) -> object:
    row = await world.row(notification_id)
    accepted = outcomes.Accepted("<n.regimen@regimen.test>", "accepted by the SMTP server")
    return outcomes.after_call(row, attempt_id, accepted, now=world.clock.now(), rules=RULES)


async def test_an_acceptance_handed_over_is_committed_though_the_notifier_dies_at_once(
    world: World, db_url: str
) -> None:
    notification_id, attempt_id = await _email_being_sent(world)
    outcome = await _acceptance(world, notification_id, attempt_id)
    pool = await create_pool(db_url, max_size=20, act_as=APP_ROLE)
    writer = OutcomeWriter(pool, create_metrics(CollectorRegistry()), lambda *_: None)
    await writer.open()
    await writer.hand_over(outcome, channel="email", patient_id=world.patient_id)  # type: ignore[arg-type]
    # What the kernel does to a killed process's sockets: every connection cut at once, before
    # any answer is read.
    pool.terminate()

    async def recorded() -> bool:
        return (await world.row(notification_id)).status == "sent"

    await eventually(recorded, within=10, what="the handed-over acceptance committed")
    [attempt] = await world.attempts(notification_id)
    assert attempt["outcome"] == "sent" and attempt["recorded_at"] is not None
    await writer.close(within=0.5)  # what the dead writer was still trying: nowhere to go


async def test_without_connections_to_spare_an_acceptance_waits_for_its_commit(
    world: World, db_url: str
) -> None:
    """A small pool keeps no connection for acceptances: the hand-over then returns only once
    the acceptance is committed (never earlier than the database has it)."""
    notification_id, attempt_id = await _email_being_sent(world)
    outcome = await _acceptance(world, notification_id, attempt_id)
    pool = await create_pool(db_url, max_size=4, act_as=APP_ROLE)
    try:
        writer = OutcomeWriter(pool, create_metrics(CollectorRegistry()), lambda *_: None)
        await writer.open()
        await writer.hand_over(outcome, channel="email", patient_id=world.patient_id)  # type: ignore[arg-type]
        assert (await world.row(notification_id)).status == "sent"
        await writer.close(within=5)
    finally:
        await pool.close()
