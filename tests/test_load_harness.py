"""The load run of `make load` (bench/load.py), kept from rotting: a few seconds of a few
patients and the front desk against the three real services in production mode must book, send
and report no errors. No timing is asserted: the figures belong to the benchmark."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from bench.load import FINAL, run_load

pytestmark = pytest.mark.slow


async def test_a_short_load_run_books_sends_and_counts_no_errors(
    db_url: str, tmp_path: Path
) -> None:
    result = await run_load(db_url, tmp_path, seconds=5, patients=4, admin_rate=4, drain_timeout=60)

    assert result.error_count == 0, (result.errors, _logs(tmp_path))
    assert result.log_problems == {"booking": 0, "scheduler": 0, "notifier": 0}, _logs(tmp_path)
    assert result.outcomes["booked"] > 0
    # Every session of every booking the pages confirmed is in the diary, and no two overlap.
    assert result.stored_sessions == result.outcomes["sessions_booked"]
    assert result.overlaps == 0
    # The booking confirmations reached the stand-ins, and nothing due was left behind.
    assert result.messages_sent > 0
    conn = await asyncpg.connect(db_url)
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM notification WHERE status <> ALL($1::text[]) AND due_at <= now()",
            list(FINAL),
        )
    finally:
        await conn.close()
    assert left == 0
    # Every step of the pages and the desk's reads was measured and reported.
    names = {name for name, _, _ in result.report_lines()}
    for step in ("start", "practitioner", "times", "hold", "review", "confirm"):
        assert f"load_page_{step}_p99_ms" in names
    assert {"load_admin_p99_ms", "load_errors", "load_rss_booking_end_mb"} <= names


def _logs(folder: Path) -> str:
    return "\n".join(
        f"== {log.name}\n{log.read_text(errors='replace')[-2000:]}" for log in folder.glob("*.log")
    )
