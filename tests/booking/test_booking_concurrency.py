"""Real concurrent HTTP requests (each its own transaction on its own connection) racing for the
same times: exactly one wins, the rest get 409 with alternatives, nothing overlaps, and a course
is booked whole or not at all."""

from __future__ import annotations

import asyncio

import pytest

from services.booking.domain import limits
from tests.booking.conftest import Demo, overlapping_active_pairs

SLOT = "2026-03-03T10:00:00Z"


async def test_twenty_staff_bookings_of_one_slot_one_wins(demo: Demo) -> None:
    patients = [await demo.patient(f"P{n}") for n in range(20)]
    replies = await asyncio.gather(
        *(
            demo.call(
                "POST",
                "/api/v1/bookings",
                role="front_desk",
                json={
                    "patient_id": p,
                    "treatment_id": demo.consultation,
                    "practitioner_id": 1,
                    "start": SLOT,
                },
            )
            for p in patients
        )
    )
    statuses = sorted(r.status for r in replies)
    assert statuses == [201] + [409] * 19, [r.body for r in replies if r.status not in (201, 409)]
    for reply in replies:
        if reply.status == 409:
            assert reply.body["conflicts"][0]["position"] == 1
            assert reply.body["alternatives"], reply.body
            assert SLOT not in [
                a["start"] for a in reply.body["alternatives"] if a["practitioner_id"] == 1
            ]
    assert await demo.pool.fetchval("SELECT count(*) FROM appointment") == 1
    assert await overlapping_active_pairs(demo.pool) == 0


async def test_twenty_public_holds_of_one_slot_one_wins(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits.LIMITS, "writes", 1000)
    replies = await asyncio.gather(
        *(demo.hold(demo.consultation, [{"practitioner_id": 1, "start": SLOT}]) for _ in range(20))
    )
    assert sorted(r.status for r in replies) == [201] + [409] * 19
    assert all(r.body.get("alternatives") for r in replies if r.status == 409), [
        r.body for r in replies if r.status == 409 and not r.body.get("alternatives")
    ]
    assert await demo.pool.fetchval("SELECT count(*) FROM appointment") == 1
    assert await overlapping_active_pairs(demo.pool) == 0


async def test_racing_whole_courses_book_all_sessions_or_none(demo: Demo) -> None:
    patients = [await demo.patient(f"C{n}") for n in range(8)]
    replies = await asyncio.gather(
        *(
            demo.call(
                "POST",
                "/api/v1/bookings",
                role="admin",
                json={
                    "patient_id": p,
                    "treatment_id": demo.mesotherapy,
                    "practitioner_id": 1,
                    "start": SLOT,
                },
            )
            for p in patients
        )
    )
    assert sorted(r.status for r in replies) == [201] + [409] * 7
    assert await demo.pool.fetchval("SELECT count(*) FROM series") == 1
    assert await demo.pool.fetchval("SELECT count(*) FROM appointment") == 8
    assert await overlapping_active_pairs(demo.pool) == 0


async def test_courses_colliding_on_a_later_session_leave_no_partial_booking(demo: Demo) -> None:
    # Every course has its own first session but all want the same second one.
    patients = [await demo.patient(f"L{n}") for n in range(6)]
    bodies = [
        {
            "patient_id": p,
            "treatment_id": demo.prp,
            "sessions": [
                {"practitioner_id": 1, "start": f"2026-03-{3 + n:02d}T14:00:00Z"},
                {"practitioner_id": 1, "start": "2026-04-06T13:00:00Z"},
                {"practitioner_id": 1, "start": "2026-05-04T13:00:00Z"},
                {"practitioner_id": 2, "start": f"2026-06-0{2 + n}T09:00:00Z"},
            ],
        }
        for n, p in enumerate(patients[:4])
    ]
    replies = await asyncio.gather(
        *(demo.call("POST", "/api/v1/bookings", role="admin", json=b) for b in bodies)
    )
    assert sorted(r.status for r in replies) == [201, 409, 409, 409], [r.body for r in replies]
    for reply in replies:
        if reply.status == 409:
            assert [c["position"] for c in reply.body["conflicts"]][0] in (2, 3)
    winners = await demo.pool.fetch(
        "SELECT patient_id, count(*) FROM appointment GROUP BY patient_id"
    )
    assert [w["count"] for w in winners] == [4]
    assert await overlapping_active_pairs(demo.pool) == 0
