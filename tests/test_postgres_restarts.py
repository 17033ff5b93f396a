"""Issue 14 item 1, the accident as it happens in production: PostgreSQL stopped (fast, then
immediate: a crash) and started again, and every backend killed with pg_terminate_backend, while
all three services run as real processes with bookings arriving, the notifier sending and the
sweeps running (bench/chaos.py, whose `make chaos` runs 50 longer cycles)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.chaos import POLL_SECONDS, run

pytestmark = pytest.mark.slow


async def test_five_database_restarts_and_killed_backends_lose_and_double_nothing(
    tmp_path: Path,
) -> None:
    outcome = await run(5, down=(5.0, 5.0), folder=tmp_path, settle=120)
    assert outcome.cycles == 5
    assert set(outcome.kinds) == {"fast", "immediate", "terminate"}

    # Every service kept running and served again after each outage.
    assert outcome.died == []
    assert all(math.isfinite(t) for t in outcome.outage_to_ready)
    # While the database was away every /readyz said 503, a page answered the friendly 503 page
    # with Retry-After, and the API's answers were 503 problem+json with Retry-After: never a 500.
    assert outcome.unready_seen and all(outcome.unready_seen)
    assert outcome.pages_503 and all(outcome.pages_503)
    assert outcome.api_503 > 0
    assert outcome.api_bad == []

    # The LISTEN connection came back each time: an urgent SMS enqueued after the cycle went
    # out far sooner than the polling interval (30 s here) would have sent it.
    assert len(outcome.listen_lags) == 6  # one before the first fault, one after each cycle
    assert max(outcome.listen_lags) < POLL_SECONDS / 3, outcome.listen_lags

    # Nothing lost or doubled: every booking answered 201 exists, every message planned reached
    # the stand-ins exactly once (SMS created at Twilio, email accepted by the SMTP server).
    assert outcome.bookings_acknowledged > 0
    assert outcome.bookings_lost == 0
    assert outcome.messages_planned > 0
    assert outcome.not_final == []
    assert outcome.messages_lost == 0, outcome.statuses
    assert outcome.sms_duplicated == 0
    assert outcome.emails_duplicated == 0

    # The sweeps survived: the scheduler's jobs ran on after the outages, none is failing at the
    # end, and the outages left one log line per failure, not a traceback.
    first_ok, last_ok = outcome.sweep_ok_runs
    assert last_ok > first_ok
    assert outcome.sweeps_failing_at_end == []
    assert outcome.tracebacks == 0
