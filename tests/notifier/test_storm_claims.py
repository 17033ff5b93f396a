"""The 08:00 storm: quiet hours release the night's reminders all at once; a confirmation or a
reply enqueued behind that backlog is claimed at the next claim, not after the whole backlog,
and the backlog itself still drains oldest first at the full claim size."""

from __future__ import annotations

from datetime import timedelta

from services.notifier.dispatch import FRESH_KINDS, FRESH_WITHIN
from shared.clock import FrozenClock
from shared.store import notifications
from shared.store.notifications.dispatch import FreshShare, LaneKey
from tests.notifier.conftest import World

EMAIL_LANE = LaneKey("email", False)
SHARE = FreshShare(2, FRESH_KINDS, FRESH_WITHIN)  # the dispatcher's share of an 8-row claim


async def _backlog(world: World, clock: FrozenClock, count: int) -> list[int]:
    """`count` email reminders held until 08:00, which was ten minutes ago."""
    released = clock.now() - timedelta(minutes=10)
    ids = []
    for i in range(count):
        session = await world.appointment(clock.now() + timedelta(days=1, minutes=40 * i))
        ids.append(
            await world.reminder(
                session, channel="email", due_at=released + timedelta(milliseconds=i)
            )
        )
    return ids


async def _claim(world: World, clock: FrozenClock, share: FreshShare | None) -> list[int]:
    claimed = await notifications.dispatch.claim_due(
        world.pool,
        lane=EMAIL_LANE,
        now=clock.now(),
        lease=timedelta(seconds=60),
        worker="storm-test",
        limit=8,
        fresh=share,
    )
    return [n.id for n in claimed]


async def test_a_reply_enqueued_behind_a_released_backlog_goes_in_the_next_claim(
    world: World, clock: FrozenClock
) -> None:
    backlog = await _backlog(world, clock, 30)
    reply = await world.reply("Your results are in", channel="email")
    claimed = await _claim(world, clock, SHARE)
    assert reply in claimed
    # The rest of the claim is the backlog's oldest, in order: nothing of it is lost or skipped.
    assert [i for i in claimed if i != reply] == backlog[:7]


async def test_without_the_share_the_reply_waits_behind_the_backlog(
    world: World, clock: FrozenClock
) -> None:
    backlog = await _backlog(world, clock, 30)
    reply = await world.reply("Your results are in", channel="email")
    assert await _claim(world, clock, None) == backlog[:8]
    assert reply not in await _claim(world, clock, None)


async def test_a_fresh_reminder_does_not_jump_the_backlog_and_no_claim_shrinks(
    world: World, clock: FrozenClock
) -> None:
    # Reminders count toward the daily limit, so a patient's must be decided in due order:
    # a reminder that has just come due takes its turn behind the older ones.
    backlog = await _backlog(world, clock, 10)
    session = await world.appointment(clock.now() + timedelta(days=2))
    fresh_reminder = await world.reminder(session, channel="email")
    assert await _claim(world, clock, SHARE) == backlog[:8]
    # A reply older than the share's window is backlog too, claimed in due order.
    old_reply = await world.reply(
        "Your results are in", channel="email", due_at=clock.now() - 2 * FRESH_WITHIN
    )
    assert await _claim(world, clock, SHARE) == [*backlog[8:], old_reply, fresh_reminder]
