"""A booking writes its confirmation and reminders into the outbox in its own transaction: the
right rows on the right channels at the right times, none for a booking that fails, none twice
for a replayed request."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

from tests import factories
from tests.booking.conftest import form, sessions_of, utc
from tests.outbox.conftest import (
    ALL_CONSENTS,
    FIRST,
    NO_CONSENTS,
    Demo,
    Row,
    book_course,
    booked_ids,
    consenting_patient,
    outbox,
    starts,
    version,
)

HOUR = timedelta(hours=1)


def of_kind(rows: list[Row], kind: str) -> list[Row]:
    return [r for r in rows if r.kind == kind]


async def test_a_public_course_booking_plans_one_confirmation_per_channel_and_two_reminders(
    demo: Demo,
) -> None:
    reply = await book_course(demo)
    ids = await booked_ids(reply)
    assert len(ids) == 8
    now = demo.api.clock.now()
    rows = await outbox(demo.pool)
    assert Counter(r.kind for r in rows) == {
        "booking_confirmation": 2,
        "reminder_72h": 8,
        "reminder_24h": 8,
    }

    confirmations = {r.channel: r for r in of_kind(rows, "booking_confirmation")}
    assert set(confirmations) == {"email", "sms"}
    for channel, row in confirmations.items():
        # One row covers every session of the booking; the email carries all of them.
        assert row.appointment_id == ids[0]
        assert row.context["appointment_ids"] == ids
        assert row.dedupe_key == f"booking:{channel}:{ids[0]}"
        assert row.due_at == now and row.status == "scheduled"
        assert row.expires_at == await starts(demo.pool, ids[-1])
        # An answer to the patient's own booking: not held back by quiet hours.
        assert row.urgent is True

    for appointment_id in ids:
        start = await starts(demo.pool, appointment_id)
        current = await version(demo.pool, appointment_id)
        mine = sorted(
            (
                r
                for r in rows
                if r.appointment_id == appointment_id and r.kind != "booking_confirmation"
            ),
            key=lambda r: r.due_at,
        )
        assert [(r.kind, r.channel) for r in mine] == [
            ("reminder_72h", "sms"),
            ("reminder_24h", "sms"),
        ]
        assert [r.due_at for r in mine] == [start - 72 * HOUR, start - 24 * HOUR]
        assert {r.expires_at for r in mine} == {start}
        assert {r.appointment_version for r in mine} == {current}
        assert [r.dedupe_key for r in mine] == [
            f"reminder_72h:sms:appt{appointment_id}:v{current}",
            f"reminder_24h:sms:appt{appointment_id}:v{current}",
        ]
        assert not any(r.urgent for r in mine)

    # Every row starts its history with the planning.
    events = await demo.pool.fetch(
        "SELECT notification_id, from_status, to_status, reason FROM notification_event"
    )
    assert len(events) == len(rows)
    assert {(e["from_status"], e["to_status"], e["reason"]) for e in events} == {
        (None, "scheduled", "planned")
    }
    # Written by the very transaction that booked the sessions.
    booked_by = {
        r["xmin"]
        for r in await demo.pool.fetch(
            "SELECT xmin::text FROM appointment WHERE id = ANY($1::bigint[])", ids
        )
    }
    planned_by = {r["xmin"] for r in await demo.pool.fetch("SELECT xmin::text FROM notification")}
    assert planned_by == booked_by and len(booked_by) == 1


async def test_without_sms_consent_there_is_no_sms_and_reminders_go_by_email(demo: Demo) -> None:
    consents = {**ALL_CONSENTS, "care_sms": False}
    await booked_ids(await book_course(demo, consents=consents))
    rows = await outbox(demo.pool)
    assert {r.channel for r in rows} == {"email"}
    assert Counter(r.kind for r in rows) == {
        "booking_confirmation": 1,
        "reminder_72h": 8,
        "reminder_24h": 8,
    }


async def test_no_consents_still_confirm_by_email_and_plan_nothing_else(demo: Demo) -> None:
    await booked_ids(await book_course(demo, consents=NO_CONSENTS))
    rows = await outbox(demo.pool)
    assert [(r.kind, r.channel) for r in rows] == [("booking_confirmation", "email")]


async def test_no_consents_and_no_email_plan_nothing(demo: Demo) -> None:
    await booked_ids(await book_course(demo, consents=NO_CONSENTS, email=None))
    assert await outbox(demo.pool) == []


async def test_an_opted_out_mobile_gets_no_sms_whatever_the_consent(demo: Demo) -> None:
    patient_id = await consenting_patient(
        demo, "Opted", care_sms=True, care_email=True, email="opted@example.com"
    )
    await demo.pool.execute(
        "UPDATE patient SET sms_opted_out_at = $2 WHERE id = $1", patient_id, demo.api.clock.now()
    )
    reply = await demo.call(
        "POST",
        "/api/v1/bookings",
        role="front_desk",
        json={
            "patient_id": patient_id,
            "treatment_id": demo.consultation,
            "practitioner_id": 1,
            "start": "2026-03-10T10:00:00Z",
        },
    )
    assert reply.status == 201, reply.body
    rows = await outbox(demo.pool)
    assert {r.channel for r in rows} == {"email"}
    assert sorted(r.kind for r in rows) == ["booking_confirmation", "reminder_24h", "reminder_72h"]
    # Booked by staff, the confirmation waits for the patient's quiet hours like any other.
    assert not any(r.urgent for r in rows)


async def test_reminders_whose_moment_has_passed_are_skipped_not_sent_late(demo: Demo) -> None:
    # The first session is 25 h away: its 72 h reminder would be late, its 24 h one is not.
    ids = await booked_ids(await book_course(demo, first="2026-03-03T10:00:00Z"))
    rows = await outbox(demo.pool)
    first = [r.kind for r in rows if r.appointment_id == ids[0] and r.kind.startswith("reminder")]
    assert first == ["reminder_24h"]
    later = [r for r in rows if r.appointment_id == ids[1] and r.kind.startswith("reminder")]
    assert sorted(r.kind for r in later) == ["reminder_24h", "reminder_72h"]
    assert all(r.due_at >= demo.api.clock.now() for r in rows)


async def test_a_failed_booking_leaves_no_outbox_rows(demo: Demo) -> None:
    proposal = await demo.propose(demo.mesotherapy, FIRST)
    lapsed = await demo.hold(demo.mesotherapy, sessions_of(proposal.body))
    assert lapsed.status == 201, lapsed.body
    # The hold runs out and someone else books the same course times meanwhile.
    demo.api.clock.advance(timedelta(minutes=11))
    winner = await booked_ids(
        await book_course(demo, mobile="07911 123457", email="other@example.com")
    )
    planned = await outbox(demo.pool)
    late = await demo.call(
        "POST",
        "/api/v1/public/bookings",
        json={"hold_token": lapsed.body["token"], "patient": form(), "consents": ALL_CONSENTS},
    )
    assert late.status == 409 and late.body["type"].endswith("hold-expired"), late.body
    assert await outbox(demo.pool) == planned
    owner = await demo.pool.fetchval("SELECT patient_id FROM appointment WHERE id = $1", winner[0])
    assert {r.patient_id for r in planned} == {owner}


async def test_racing_staff_bookings_plan_messages_only_for_the_winner(demo: Demo) -> None:
    patients = [
        await consenting_patient(demo, f"Racer{k}", mobile=f"+44770090010{k}") for k in range(6)
    ]

    async def book(patient_id: int):  # type: ignore[no-untyped-def]
        return await demo.call(
            "POST",
            "/api/v1/bookings",
            role="front_desk",
            json={
                "patient_id": patient_id,
                "treatment_id": demo.consultation,
                "practitioner_id": 1,
                "start": "2026-03-10T10:00:00Z",
            },
        )

    replies = await asyncio.gather(*(book(p) for p in patients))
    assert sorted(r.status for r in replies) == [201] + [409] * 5
    winner = next(r for r in replies if r.status == 201).body["patient_id"]
    rows = await outbox(demo.pool)
    assert {r.patient_id for r in rows} == {winner}
    assert sorted(r.kind for r in rows) == ["booking_confirmation", "reminder_24h", "reminder_72h"]


async def test_an_idempotent_replay_plans_nothing_twice(demo: Demo) -> None:
    headers = {"Idempotency-Key": "course-1"}
    proposal = await demo.propose(demo.mesotherapy, FIRST)
    hold = await demo.hold(demo.mesotherapy, sessions_of(proposal.body))
    body = {"hold_token": hold.body["token"], "patient": form(), "consents": ALL_CONSENTS}
    first = await demo.call("POST", "/api/v1/public/bookings", json=body, headers=headers)
    assert first.status == 201, first.body
    planned = await outbox(demo.pool)
    assert len(planned) == 18
    replies = await asyncio.gather(
        *(
            demo.call("POST", "/api/v1/public/bookings", json=body, headers=headers)
            for _ in range(3)
        )
    )
    assert all(r.status == 201 and r.body == first.body for r in replies)
    assert all(r.headers.get("Idempotent-Replayed") == "true" for r in replies)
    assert await outbox(demo.pool) == planned


async def test_a_patient_with_an_earlier_no_show_gets_the_2h_reminder(demo: Demo) -> None:
    patient_id = await consenting_patient(demo, "Missed")
    # A missed consultation last month.
    missed = datetime(2026, 2, 2, 10, tzinfo=UTC)
    await factories.appointment(
        demo.pool,
        clinic_id=demo.clinic_id,
        practitioner_id=1,
        treatment_id=demo.consultation,
        patient_id=patient_id,
        starts_at=missed,
        now=missed,
        status="no_show",
    )
    start = "2026-03-10T10:00:00Z"
    reply = await demo.call(
        "POST",
        "/api/v1/bookings",
        role="front_desk",
        json={
            "patient_id": patient_id,
            "treatment_id": demo.consultation,
            "practitioner_id": 1,
            "start": start,
        },
    )
    assert reply.status == 201, reply.body
    reminders = {r.kind: r for r in await outbox(demo.pool) if r.kind.startswith("reminder")}
    assert set(reminders) == {"reminder_72h", "reminder_24h", "reminder_2h"}
    assert reminders["reminder_2h"].due_at == utc(start) - 2 * HOUR
    assert reminders["reminder_2h"].channel == "sms"
