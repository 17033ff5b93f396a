"""No lock is held while a provider call is in flight, so the lease alone says the row is being
sent: a live worker renews the leases of its calls, and only a dead worker's rows are rescued."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from services.notifier.sweeps import rescue_leases
from shared.clock import FrozenClock
from tests.conftest import StandIn
from tests.notifier.conftest import MOBILE, StartNotifier, World, eventually


async def test_a_call_outliving_its_lease_is_not_rescued_while_the_worker_lives(
    world: World, start_notifier: StartNotifier, twilio: StandIn, clock: FrozenClock
) -> None:
    twilio.twilio.gate.clear()  # type: ignore[attr-defined]  # the call hangs at Twilio
    notification_id = await world.reply("Your results are in")
    await start_notifier(notifier_lease_seconds=10, twilio_timeout=30.0)
    await asyncio.wait_for(twilio.twilio.arrived.wait(), timeout=10)  # type: ignore[attr-defined]
    # The dev clock jumps: by the app's clock the lease taken at the claim has run out, and the
    # notifier's own rescue sweep runs at once; the worker is alive, so nothing is rescued.
    clock.advance(timedelta(seconds=30))

    async def renewed() -> bool:
        row = await world.row(notification_id)
        return row.lease_until is not None and row.lease_until > clock.now()

    await eventually(renewed, within=10, what="the lease of the call in flight renewed")
    assert await rescue_leases(world.pool, clock, liveness=timedelta(seconds=10)) == 0
    assert (await world.row(notification_id)).status == "sending"

    twilio.twilio.gate.set()  # type: ignore[attr-defined]
    await world.settled(notification_id, "sent", "delivered")
    assert len(twilio.twilio.sent_to(MOBILE)) == 1


async def test_a_dead_workers_row_is_rescued_once_its_lease_and_a_lease_of_silence_pass(
    world: World, clock: FrozenClock
) -> None:
    from shared.store import notifications
    from shared.store.notifications.dispatch import LaneKey

    notification_id = await world.reply("Your results are in")
    await notifications.dispatch.claim_due(
        world.pool,
        lane=LaneKey("sms", False),
        now=clock.now(),
        lease=timedelta(seconds=10),
        worker="dead-worker",
        limit=1,
    )
    clock.advance(timedelta(seconds=30))
    # Its lease ran out by the app's clock, but the claim itself was a sign of life just now.
    assert await rescue_leases(world.pool, clock, liveness=timedelta(seconds=10)) == 0
    await world.pool.execute(
        "UPDATE notification SET lease_renewed_at = clock_timestamp() - interval '1 minute' "
        "WHERE id = $1",
        notification_id,
    )
    assert await rescue_leases(world.pool, clock, liveness=timedelta(seconds=10)) == 1
    assert (await world.row(notification_id)).status == "unknown"
