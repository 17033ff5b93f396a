"""load_context against the real database (the demo clinic), and what it renders to: the
current patient, consents, clinic and sessions, resolved for the row's channel."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from icalendar import Calendar

from services.devkit.demo_data import seed_demo_data
from shared.clock import FrozenClock
from shared.config import Settings
from shared.links import open_patient_link
from shared.messaging import load_context, render
from shared.providers.email import EmailClient, build_message, send_once
from shared.scheduling.loader import load_treatment
from shared.store import appointments, holds, notifications, patients
from shared.store.holds import NewHold
from shared.store.notifications.outbox import NewNotification
from tests import factories
from tests.conftest import SmtpSink

TUESDAY = datetime(2026, 3, 17, 10, 0, tzinfo=UTC)  # 10:00 in London, before the clocks change


@dataclass
class Demo:
    pool: asyncpg.Pool
    now: datetime
    clinic_id: int
    practitioners: list[int]
    treatment_id: int
    treatment_name: str
    treatment_code: str
    duration: timedelta


async def demo_clinic(pool: asyncpg.Pool, clock: FrozenClock) -> Demo:
    async with pool.acquire() as conn:
        await seed_demo_data(conn)
    clinic_id = int(await pool.fetchval("SELECT min(id) FROM clinic"))
    practitioners = [
        int(r["id"]) for r in await pool.fetch("SELECT id FROM practitioner ORDER BY id")
    ]
    treatment_id = int(
        await pool.fetchval("SELECT id FROM treatment WHERE code = 'hair-mesotherapy'")
    )
    treatment = await load_treatment(pool, treatment_id)
    assert treatment is not None
    return Demo(
        pool,
        clock.now(),
        clinic_id,
        practitioners,
        treatment_id,
        treatment.name,
        treatment.code,
        treatment.spec.duration,
    )


async def new_patient(demo: Demo, first_name: str = "Ada", **kw: Any) -> int:
    values: dict[str, Any] = {"mobile": "+447700900123", "email": "ada@example.com"}
    values.update(kw)
    patient_id = await factories.patient(
        demo.pool,
        clinic_id=demo.clinic_id,
        first_name=first_name,
        last_name="Lovelace",
        date_of_birth=None,
        medications="finasteride",
        now=demo.now,
        **values,
    )
    await factories.consent(
        demo.pool,
        patient_id,
        {"care_sms": True, "care_email": True},
        source="booking_form",
        now=demo.now,
    )
    return patient_id


async def book(
    demo: Demo,
    patient_id: int,
    starts: datetime,
    *,
    practitioner: int = 0,
    hold_id: int | None = None,
) -> int:
    return await factories.appointment(
        demo.pool,
        clinic_id=demo.clinic_id,
        practitioner_id=demo.practitioners[practitioner],
        treatment_id=demo.treatment_id,
        patient_id=patient_id,
        starts_at=starts,
        now=demo.now,
        hold_id=hold_id,
        source="public",
        buffers=factories.NO_BUFFERS,
    )


async def cancel(demo: Demo, appointment_id: int) -> None:
    async with demo.pool.acquire() as conn, conn.transaction():
        await appointments.transition(conn, appointment_id, "cancelled", actor="test", now=demo.now)


async def outbox_row(demo: Demo, **fields: Any) -> SimpleNamespace:
    """Enqueue a row the way planners do and read it back with every column (the store's
    Notification dataclass carries the same fields)."""
    kind = fields.pop("kind")
    item = NewNotification(
        clinic_id=demo.clinic_id,
        kind=kind,
        template=kind,
        due_at=demo.now,
        dedupe_key=f"test:{kind}:{fields}",
        **fields,
    )
    notification_id = await notifications.outbox.insert(demo.pool, item, now=demo.now)
    row = await demo.pool.fetchrow("SELECT * FROM notification WHERE id = $1", notification_id)
    assert row is not None
    return SimpleNamespace(**dict(row))


def weekly(count: int) -> list[datetime]:
    """10:00 London time on consecutive Tuesdays from 17 March (across the clock change)."""
    london = ZoneInfo("Europe/London")
    first = datetime(2026, 3, 17, 10, 0, tzinfo=london)
    # Adding days to an aware datetime keeps its wall-clock time: 10:00 stays 10:00.
    return [(first + timedelta(days=7 * week)).astimezone(UTC) for week in range(count)]


async def test_a_booking_confirmation_reads_its_sessions_and_sends_with_a_calendar(
    pool: asyncpg.Pool, clock: FrozenClock, settings: Settings, smtp: SmtpSink
) -> None:
    demo = await demo_clinic(pool, clock)
    patient_id = await new_patient(demo)
    other_patient = await new_patient(demo, "Bob", mobile="+447700900456", email="bob@example.com")
    ids = [await book(demo, patient_id, s) for s in weekly(4)]
    not_hers = await book(demo, other_patient, TUESDAY + timedelta(hours=2), practitioner=1)
    await cancel(demo, ids[3])
    listed = [ids[2], ids[0], ids[1], ids[3], not_hers, 999_999]
    common = {"patient_id": patient_id, "appointment_id": ids[0], "appointment_version": 1}

    sms_row = await outbox_row(
        demo,
        kind="booking_confirmation",
        channel="sms",
        context={"appointment_ids": listed},
        **common,
    )
    ctx = await load_context(pool, sms_row, settings=settings, now=clock.now())
    assert ctx.clinic.name == "Regimen Demo Hair Clinic"
    assert ctx.patient is not None and ctx.patient.id == patient_id
    assert set(ctx.consents) == {"care_sms", "care_email"}
    assert ctx.appointment is not None and ctx.appointment.id == ids[0]
    # the rest of her booking, in order; not the cancelled one, not someone else's
    assert [a.id for a in ctx.other_appointments] == [ids[1], ids[2]]
    assert ctx.recipient == "+447700900123"
    assert ctx.patient_zone.key == "Europe/London"
    # Her own private link, minted now: it opens her page, nobody else's.
    base, _, token = ctx.self_service_url.rpartition("/s/")
    assert base == "https://clinic.example.test"
    assert settings.secret_key is not None
    link = open_patient_link(settings.secret_key, token, now=clock.now(), current_version=1)
    assert link.patient_id == patient_id

    sms = render(sms_row, ctx, settings=settings)
    assert sms.to == "+447700900123" and sms.segments == 2
    assert "Tue 17 Mar 10:00, Tue 24 Mar 10:00, Tue 31 Mar 10:00" in sms.body
    assert "020 7946 0000" in sms.body
    for secret in (demo.treatment_name, demo.treatment_code, "mesotherapy", "finasteride"):
        assert secret.lower() not in sms.body.lower()

    email_row = await outbox_row(
        demo,
        kind="booking_confirmation",
        channel="email",
        context={"appointment_ids": listed},
        **common,
    )
    mail = render(
        email_row, await load_context(pool, email_row, settings=settings), settings=settings
    )
    assert mail.to == "ada@example.com"
    assert mail.subject is not None and demo.treatment_name not in mail.subject
    assert settings.email_from is not None
    message = build_message(
        sender=settings.email_from,
        to=mail.to,
        subject=mail.subject,
        text=mail.body,
        html=mail.html,
        attachments=mail.attachments,
    )
    await send_once(EmailClient(settings), message)
    (received,) = smtp.handler.messages
    assert received["Subject"] == "Your 3 appointments at Regimen Demo Hair Clinic are booked"
    (calendar_part,) = list(received.iter_attachments())
    calendar = Calendar.from_ical(calendar_part.get_content())
    starts = [e.decoded("dtstart") for e in calendar.walk("VEVENT")]
    assert starts == weekly(3)  # 10:00 GMT twice, then 09:00 UTC = 10:00 BST
    (sent,) = smtp.recorder.emails_to("ada@example.com")
    assert "1 Demo Street, London W1A 1AA" in sent.body


async def test_without_a_list_a_booking_confirmation_covers_every_session_of_its_hold(
    pool: asyncpg.Pool, clock: FrozenClock
) -> None:
    demo = await demo_clinic(pool, clock)
    patient_id = await new_patient(demo)
    hold = NewHold(
        clinic_id=demo.clinic_id,
        treatment_id=demo.treatment_id,
        token_hash=b"test-hold",
        expires_at=demo.now + timedelta(minutes=10),
    )
    hold_id = await holds.insert(pool, hold, now=demo.now)
    ids = [await book(demo, patient_id, s, hold_id=hold_id) for s in weekly(3)]
    row = await outbox_row(
        demo,
        kind="booking_confirmation",
        channel="email",
        patient_id=patient_id,
        appointment_id=ids[0],
    )
    ctx = await load_context(pool, row)
    assert [a.id for a in ctx.sessions] == ids
    assert ctx.recipient == "ada@example.com"
    assert ctx.self_service_url == ""  # no settings given: render uses settings.public_url


async def test_merged_reminders_load_the_other_sessions_and_read_as_one_message(
    pool: asyncpg.Pool, clock: FrozenClock, settings: Settings
) -> None:
    demo = await demo_clinic(pool, clock)
    patient_id = await new_patient(demo)
    first, second = [await book(demo, patient_id, s) for s in weekly(2)]
    row = await outbox_row(
        demo,
        kind="reminder_72h",
        channel="sms",
        patient_id=patient_id,
        appointment_id=first,
        appointment_version=1,
        context={"merged_appointment_ids": [second]},
    )
    ctx = await load_context(pool, row, settings=settings)
    assert [a.id for a in ctx.other_appointments] == [second]
    body = render(row, ctx, settings=settings).body
    assert body.startswith("Hi Ada, reminder: your appointments at Regimen Demo Hair Clinic:")
    assert "Tue 17 Mar 10:00, Tue 24 Mar 10:00" in body
    assert "Reply C to confirm, R to reschedule." in body


async def test_recipient_and_zone_follow_the_patients_current_data(
    pool: asyncpg.Pool, clock: FrozenClock, settings: Settings
) -> None:
    demo = await demo_clinic(pool, clock)
    patient_id = await new_patient(demo, email=None)
    (appointment_id,) = [await book(demo, patient_id, s) for s in weekly(1)]
    sms = await outbox_row(
        demo,
        kind="reminder_24h",
        channel="sms",
        patient_id=patient_id,
        appointment_id=appointment_id,
    )
    email = await outbox_row(
        demo,
        kind="reminder_24h",
        channel="email",
        patient_id=patient_id,
        appointment_id=appointment_id,
    )
    assert (await load_context(pool, email)).recipient is None  # no address: dispatch suppresses

    current = await patients.get(pool, patient_id)
    assert current is not None
    await patients.update(
        pool,
        patient_id,
        expected_version=current.version,
        now=demo.now,
        changes={"mobile": "+12125550199", "time_zone": "America/New_York"},
    )
    ctx = await load_context(pool, sms, settings=settings)
    assert ctx.recipient == "+12125550199"
    assert ctx.patient_zone.key == "America/New_York"
    body = render(sms, ctx, settings=settings).body
    assert "Tue 17 Mar 06:00 EDT" in body  # 10:00 GMT; New York already on summer time
    assert "+44 20 7946 0000" in body  # dialled from a US mobile

    current = await patients.get(pool, patient_id)
    assert current is not None
    await patients.update(
        pool,
        patient_id,
        expected_version=current.version,
        now=demo.now,
        changes={"time_zone": "Not/AZone"},
    )
    assert (await load_context(pool, sms)).patient_zone.key == "Europe/London"

    await patients.erase(pool, patient_id, now=demo.now)
    assert (await load_context(pool, sms)).recipient is None


async def test_staff_alerts_go_to_their_own_recipient_and_replies_to_unknown_numbers_too(
    pool: asyncpg.Pool, clock: FrozenClock, settings: Settings
) -> None:
    demo = await demo_clinic(pool, clock)
    patient_id = await new_patient(demo)
    (appointment_id,) = [await book(demo, patient_id, s) for s in weekly(1)]
    alert = await outbox_row(
        demo,
        kind="staff_alert",
        channel="sms",
        patient_id=patient_id,
        appointment_id=appointment_id,
        recipient="+447700900999",
        urgent=True,
        context={"text": "Answer 3 to the 24 h check-in: fever and pus."},
    )
    ctx = await load_context(pool, alert, settings=settings)
    assert ctx.recipient == "+447700900999"
    body = render(alert, ctx, settings=settings).body
    assert body.startswith("ALERT Regimen Demo Hair Clinic: Answer 3 to the 24 h check-in")
    # a clinician's phone shows texts on its lock screen: the record number, not the name
    assert f"Patient #{patient_id}, appt Tue 17 Mar 10:00." in body
    assert "Lovelace" not in body

    reply = await outbox_row(
        demo,
        kind="reply",
        channel="sms",
        recipient="+447700900777",
        urgent=True,
        context={"text": "We could not find your booking. Please call us."},
    )
    ctx = await load_context(pool, reply, settings=settings)
    assert ctx.patient is None and ctx.consents == {} and ctx.other_appointments == []
    assert ctx.recipient == "+447700900777"
    assert render(reply, ctx, settings=settings).body == (
        "Regimen Demo Hair Clinic: We could not find your booking. Please call us."
    )


async def test_no_patient_message_names_the_treatment(
    pool: asyncpg.Pool, clock: FrozenClock, settings: Settings
) -> None:
    demo = await demo_clinic(pool, clock)
    patient_id = await new_patient(demo)
    ids = [await book(demo, patient_id, s) for s in weekly(2)]
    for kind in (
        "booking_confirmation",
        "reminder_72h",
        "reminder_24h",
        "reminder_2h",
        "reschedule_notice",
        "cancellation_notice",
    ):
        if kind == "cancellation_notice":
            await cancel(demo, ids[0])
        for channel in ("sms", "email"):
            row = await outbox_row(
                demo,
                kind=kind,
                channel=channel,
                patient_id=patient_id,
                appointment_id=ids[0],
                context={"appointment_ids": ids},
            )
            composed = render(
                row, await load_context(pool, row, settings=settings), settings=settings
            )
            for text in (composed.body, composed.subject or "", composed.html or ""):
                assert demo.treatment_name.lower() not in text.lower(), (kind, channel)
                assert "mesotherapy" not in text.lower(), (kind, channel)
