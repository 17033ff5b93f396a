"""The sender's rate limit, shared by every notifier replica through PostgreSQL: a burst is
spread one segment per second (by default) whichever replica sends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from shared.clock import FrozenClock
from shared.store import notifications
from tests.conftest import StandIn
from tests.notifier.conftest import MOBILE, StartNotifier, World, eventually

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


async def test_reserved_send_times_are_one_second_apart_per_segment(pool: asyncpg.Pool) -> None:
    async def reserve(
        segments: int, *, urgent: bool = False, sender: str = "+15005550006"
    ) -> datetime:
        return await notifications.send_rules.reserve_sender_slot(
            pool, sender=sender, now=NOW, cost=SECOND * segments, urgent=urgent
        )

    assert await reserve(1) == NOW
    assert await reserve(1) == NOW + SECOND
    assert await reserve(2) == NOW + 2 * SECOND  # a two-segment message takes two seconds
    assert await reserve(1) == NOW + 4 * SECOND
    # An urgent message goes now and pushes the queue back by its cost.
    assert await reserve(1, urgent=True) == NOW
    assert await reserve(1) == NOW + 6 * SECOND
    # Each sender has its own pace.
    assert await reserve(1, sender="MG" + "1" * 32) == NOW


async def test_a_burst_is_spread_across_replicas_one_second_apart(
    world: World, start_notifier: StartNotifier, twilio: StandIn, clock: FrozenClock
) -> None:
    await start_notifier(sms_segments_per_second=1)
    await start_notifier(sms_segments_per_second=1)
    ids = [await world.reply(f"Answer {i}.") for i in range(5)]

    async def spread() -> bool:
        rows = [await world.row(i) for i in ids]
        return (
            sum(r.status in ("sent", "delivered") for r in rows) == 1
            and sum(r.status == "scheduled" and r.due_at > NOW for r in rows) == 4
        )

    await eventually(spread, what="one sent and four waiting for their slots")
    waiting = sorted(
        [(await world.row(i)).due_at for i in ids if (await world.row(i)).sent_at is None]
    )
    assert waiting == [NOW + n * SECOND for n in (1, 2, 3, 4)]
    assert len(twilio.twilio.sent_to(MOBILE)) == 1
    for sent in (2, 3, 4, 5):
        clock.advance(SECOND)

        async def caught_up(sent: int = sent) -> bool:
            return len(twilio.twilio.sent_to(MOBILE)) == sent

        await eventually(caught_up, what=f"{sent} messages out")
    reasons = [reason for _, _, reason in await world.reasons(ids[-1])]
    assert "rate limit: waits for the sender's next free slot" in reasons
