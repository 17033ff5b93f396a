"""Idempotency-Key on booking POSTs: the same key and body give the same answer (one booking),
another body with the same key is a 422, and keys are scoped per staff token or public client."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import aiohttp

from services.booking.api import idempotency
from shared.clock import FrozenClock
from tests.booking.conftest import Demo, form

SLOT = "2026-03-03T10:00:00Z"


def _key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


async def _staff_booking(demo: Demo, key: str, role: str = "front_desk", **extra: object):
    patient = extra.pop("patient_id", None) or await demo.patient()
    body = {
        "patient_id": patient,
        "treatment_id": demo.consultation,
        "practitioner_id": 1,
        "start": SLOT,
        **extra,
    }
    return await demo.call("POST", "/api/v1/bookings", role=role, json=body, headers=_key(key))


async def test_same_key_same_body_gives_the_same_answer_and_one_booking(demo: Demo) -> None:
    patient = await demo.patient()
    first = await _staff_booking(demo, "key-1", patient_id=patient)
    again = await _staff_booking(demo, "key-1", patient_id=patient)
    assert first.status == again.status == 201
    assert first.body == again.body
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert await demo.pool.fetchval("SELECT count(*) FROM appointment") == 1
    other_body = await _staff_booking(demo, "key-1", patient_id=patient, practitioner_id=2)
    assert other_body.status == 422, other_body.body
    assert other_body.body["errors"][0]["path"] == "Idempotency-Key"
    assert await demo.pool.fetchval("SELECT count(*) FROM appointment") == 1


async def test_concurrent_duplicates_wait_for_the_first_answer(demo: Demo) -> None:
    patient = await demo.patient()
    replies = await asyncio.gather(
        *(_staff_booking(demo, "same-key", patient_id=patient) for _ in range(10))
    )
    assert {r.status for r in replies} == {201}
    # Equal as JSON (the stored copy is jsonb, so key order may differ from the first answer).
    assert all(r.body == replies[0].body for r in replies)
    assert await demo.pool.fetchval("SELECT count(*) FROM appointment") == 1


async def test_a_conflict_answer_is_replayed_too(demo: Demo) -> None:
    patient = await demo.patient()
    assert (await _staff_booking(demo, "winner", patient_id=patient)).status == 201
    loser = await demo.patient("Late")
    first = await _staff_booking(demo, "loser", patient_id=loser)
    assert first.status == 409
    await demo.pool.execute(
        "UPDATE appointment SET status = 'cancelled', cancelled_reason = 'test'"
    )
    again = await _staff_booking(demo, "loser", patient_id=loser)
    assert again.status == 409 and again.body == first.body


async def test_keys_are_scoped_per_token(demo: Demo) -> None:
    a = await _staff_booking(demo, "shared", role="front_desk")
    b = await _staff_booking(demo, "shared", role="admin", start="2026-03-03T11:00:00Z")
    assert (a.status, b.status) == (201, 201)
    assert a.body["appointments"][0]["id"] != b.body["appointments"][0]["id"]


async def test_public_hold_and_booking_replays(demo: Demo) -> None:
    sessions = [{"practitioner_id": 1, "start": SLOT}]
    first = await demo.hold(demo.consultation, sessions, headers=_key("hold-1"))
    again = await demo.hold(demo.consultation, sessions, headers=_key("hold-1"))
    assert first.status == again.status == 201
    assert first.body == again.body  # the token too, though only its hash is stored
    assert await demo.pool.fetchval("SELECT count(*) FROM booking_hold") == 1
    stored = await demo.pool.fetchval("SELECT response FROM idempotent_request")
    assert stored["token"] == ""
    token = first.body["token"]
    booked = await demo.book(token, headers=_key("book-1"))
    replay = await demo.book(token, headers=_key("book-1"))
    assert booked.status == replay.status == 201 and booked.body == replay.body
    assert await demo.pool.fetchval("SELECT count(*) FROM patient") == 1
    without_key = await demo.book(token)
    assert without_key.status == 409  # a new request: the hold is already booked


async def test_bad_keys_are_422_and_old_keys_are_forgotten(demo: Demo) -> None:
    for bad in ("has space", "x" * 201):
        reply = await _staff_booking(demo, bad)
        assert reply.status == 422 and reply.body["errors"][0]["path"] == "Idempotency-Key"
    patient = await demo.patient()
    assert (await _staff_booking(demo, "old", patient_id=patient)).status == 201
    # A clock of its own: moving the service's clock would run its purge sweep at once.
    later = FrozenClock(demo.api.clock.now() + idempotency.RETENTION + timedelta(minutes=1))
    assert await idempotency.purge_keys(demo.pool, later) == 1
    assert await demo.pool.fetchval("SELECT count(*) FROM idempotent_request") == 0


async def test_a_public_key_used_from_another_address_never_reveals_the_hold_token(
    demo: Demo,
) -> None:
    """Someone who saw (or guessed) another visitor's Idempotency-Key sends it from their own
    machine: they get an answer of their own, never the other visitor's hold token."""
    sessions = [{"practitioner_id": 1, "start": SLOT}]
    mine = await demo.hold(demo.consultation, sessions, headers=_key("visitor-key"))
    assert mine.status == 201
    body = {"treatment_id": demo.consultation, "sessions": sessions}
    # Another machine: a connection from another loopback address reaches the service as a
    # different client.
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as elsewhere:
        async with elsewhere.post(
            demo.api.base + "/api/v1/public/holds", json=body, headers=_key("visitor-key")
        ) as reply:
            theirs = await reply.json(content_type=None)
            assert reply.status == 409, theirs  # a fresh attempt: the time is held already
            assert "Idempotent-Replayed" not in reply.headers
    assert mine.body["token"] not in str(theirs)
    # The visitor's own retry still gets their answer back.
    again = await demo.hold(demo.consultation, sessions, headers=_key("visitor-key"))
    assert again.status == 201 and again.body["token"] == mine.body["token"]


async def test_a_booking_refused_for_a_bad_mobile_does_not_use_up_its_key(demo: Demo) -> None:
    """The accident: a patient's app sends a typo in the mobile with key K and gets 422; the
    patient corrects it and the app retries with the same K. The retry books (the refusal was
    not stored: nothing had been done), a repeat of it replays that booking, and another body
    with K after that is still refused as a different request."""
    sessions = [{"practitioner_id": 1, "start": SLOT}]
    hold = await demo.hold(demo.consultation, sessions)
    assert hold.status == 201, hold.body
    token = hold.body["token"]
    typo = await demo.book(token, form(mobile="07911 12345x"), headers=_key("K"))
    assert typo.status == 422, typo.body
    assert typo.body["errors"][0]["path"] == "patient.mobile"
    assert await demo.pool.fetchval("SELECT count(*) FROM idempotent_request") == 0

    corrected = await demo.book(token, form(), headers=_key("K"))
    assert corrected.status == 201, corrected.body
    assert "Idempotent-Replayed" not in corrected.headers
    again = await demo.book(token, form(), headers=_key("K"))
    assert again.status == 201 and again.body == corrected.body
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert await demo.pool.fetchval("SELECT count(*) FROM patient") == 1

    other = await demo.book(token, form(first_name="Someone"), headers=_key("K"))
    assert other.status == 422, other.body
    assert other.body["type"].endswith("/idempotency-key-reused")
    assert await demo.pool.fetchval("SELECT count(*) FROM patient") == 1


async def test_a_staff_booking_refused_by_validation_keeps_its_key_free(demo: Demo) -> None:
    """The desk picks a patient id that is not on file (422 from the booking rules, inside the
    transaction): the corrected booking with the same key is booked, not answered "already
    used for a different request"."""
    patient = await demo.patient()
    wrong = await _staff_booking(demo, "desk-1", patient_id=999999)
    assert wrong.status == 422, wrong.body
    assert wrong.body["errors"][0]["path"] == "patient_id"
    right = await _staff_booking(demo, "desk-1", patient_id=patient)
    assert right.status == 201, right.body
    assert "Idempotent-Replayed" not in right.headers
