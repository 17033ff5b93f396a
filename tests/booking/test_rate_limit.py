"""Public rate limits: fixed windows counted in PostgreSQL per client address (and bookings per
mobile number), 429 with Retry-After once over the limit."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.booking.domain import limits
from shared.clock import FrozenClock
from tests.booking.conftest import Demo, form


async def test_reads_over_the_limit_get_429_with_retry_after(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits.LIMITS, "reads", 3)
    path = f"/api/v1/public/clinics/{demo.clinic_id}"
    demo.api.clock.advance(timedelta(seconds=15))  # 45 s left in this minute's window
    for _ in range(3):
        assert (await demo.call("GET", path)).status == 200
    limited = await demo.call("GET", path)
    assert limited.status == 429
    assert limited.headers["Retry-After"] == "45"
    assert limited.body["type"].endswith("rate-limited") and limited.body["retry_after"] == 45
    # Staff are not limited by the public counters.
    assert (await demo.call("GET", "/api/v1/me", role="admin")).status == 200
    demo.api.clock.advance(timedelta(seconds=45))
    assert (await demo.call("GET", path)).status == 200
    # A clock of its own: moving the service's clock would run its purge sweep at once.
    later = FrozenClock(demo.api.clock.now() + limits.KEEP_COUNTERS + timedelta(minutes=1))
    assert await limits.purge_counters(demo.pool, later) >= 2


async def test_writes_have_their_own_tighter_limit(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits.LIMITS, "writes", 2)
    starts = ["2026-03-03T10:00:00Z", "2026-03-03T11:00:00Z", "2026-03-03T12:00:00Z"]
    replies = [
        await demo.hold(demo.consultation, [{"practitioner_id": 1, "start": s}]) for s in starts
    ]
    assert [r.status for r in replies] == [201, 201, 429]
    assert await demo.pool.fetchval("SELECT count(*) FROM booking_hold") == 2
    # Reads are counted separately.
    assert (await demo.call("GET", f"/api/v1/public/clinics/{demo.clinic_id}")).status == 200


async def test_bookings_per_mobile_number(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits.LIMITS, "bookings_per_mobile", 1)
    first = await demo.hold(
        demo.consultation, [{"practitioner_id": 1, "start": "2026-03-03T10:00Z"}]
    )
    second = await demo.hold(
        demo.consultation, [{"practitioner_id": 2, "start": "2026-03-03T10:00Z"}]
    )
    assert (await demo.book(first.body["token"])).status == 201
    # The same mobile typed differently is the same number.
    limited = await demo.book(second.body["token"], form(mobile="+44 7911 123456"))
    assert limited.status == 429 and "Retry-After" in limited.headers
    state = await demo.call(
        "GET", "/api/v1/public/hold", headers={"Hold-Token": second.body["token"]}
    )
    assert state.body["state"] == "active"  # nothing was booked or consumed
    other = await demo.book(second.body["token"], form(mobile="07911 123457", email=None))
    assert other.status == 201, other.body
