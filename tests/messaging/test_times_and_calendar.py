"""Times as the patient reads them (their zone, across daylight-saving changes) and the .ics
that carries every session, parsed back the way a calendar would."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

from icalendar import Calendar

from shared.messaging import render
from shared.messaging.ics import appointment_uid
from shared.providers.email import build_message
from shared.store.appointments import Appointment
from tests.conftest import make_settings
from tests.messaging.factories import (
    TREATMENT_NAME,
    Row,
    appointment,
    clinic,
    context,
    course,
    patient,
)

SETTINGS = make_settings()
HOST = "clinic.example.test"  # the host of SETTINGS.public_url


def london_course_across_dst() -> list[Appointment]:
    # Tuesdays at 10:00 London time; the clocks go forward on Sunday 29 March 2026.
    return course(datetime(2026, 3, 17, 10, 0, tzinfo=UTC), count=4)


def events(composed_attachments: list) -> tuple[Calendar, list]:  # type: ignore[type-arg]
    (attachment,) = composed_attachments
    calendar = Calendar.from_ical(attachment.content)
    return calendar, list(calendar.walk("VEVENT"))


def test_a_course_keeps_its_local_time_across_the_uk_clock_change() -> None:
    sessions = london_course_across_dst()
    assert [s.starts_at.hour for s in sessions] == [10, 10, 9, 9]  # UTC: GMT, GMT, BST, BST
    row = Row(kind="booking_confirmation")
    body = render(row, context(row, sessions), settings=SETTINGS).body
    assert "Tue 24 Mar 10:00, Tue 31 Mar 10:00, Tue 7 Apr 10:00" in body
    # eight sessions: grouped under one local time although their UTC hours differ
    eight = course(datetime(2026, 3, 3, 10, 0, tzinfo=UTC))
    grouped = render(row, context(row, eight), settings=SETTINGS).body
    assert "3, 10, 17, 24 Mar; 7, 21 Apr; 5, 19 May at 10:00" in grouped
    email = render(replace(row, channel="email"), context(row, sessions), settings=SETTINGS)
    for day in ("Tuesday 24 March 2026 at 10:00", "Tuesday 31 March 2026 at 10:00"):
        assert day in email.body
    assert "GMT" not in email.body and "BST" not in email.body  # same zone as the clinic


def test_times_are_in_the_patients_zone_when_it_differs_from_the_clinics() -> None:
    # New York moved to summer time on 8 March, London only on 29 March: for three weeks the
    # gap is four hours instead of five.
    sessions = [
        appointment(1, datetime(2026, 3, 3, 10, 0, tzinfo=UTC)),  # 10:00 GMT = 05:00 EST
        appointment(2, datetime(2026, 3, 24, 10, 0, tzinfo=UTC)),  # 10:00 GMT = 06:00 EDT
        appointment(3, datetime(2026, 3, 31, 9, 0, tzinfo=UTC)),  # 10:00 BST = 05:00 EDT
    ]
    row = Row(kind="booking_confirmation", channel="email")
    ctx = context(row, sessions, the_patient=patient(time_zone="America/New_York"))
    body = render(row, ctx, settings=SETTINGS).body
    assert "Tuesday 3 March 2026 at 05:00 EST" in body
    assert "Tuesday 24 March 2026 at 06:00 EDT" in body
    assert "Tuesday 31 March 2026 at 05:00 EDT" in body


def test_a_us_clinic_reads_month_first_with_a_12_hour_clock_across_its_dst_change() -> None:
    ny = clinic(zone="America/New_York", phone="+12125550123", region="US", address="NYC")
    sessions = [
        appointment(1, datetime(2026, 3, 3, 15, 0, tzinfo=UTC)),  # 10:00 EST
        appointment(2, datetime(2026, 3, 10, 14, 0, tzinfo=UTC)),  # 10:00 EDT
    ]
    row = Row(kind="reminder_72h")
    the_patient = patient(mobile="+12125550199")
    sms = render(
        row, context(row, sessions[1:], the_clinic=ny, the_patient=the_patient), settings=SETTINGS
    )
    assert "Tue Mar 10 10:00 AM" in sms.body
    assert "(212) 555-0123" in sms.body  # a US reader dials the national form
    booking = Row(kind="booking_confirmation")
    body = render(
        booking,
        context(booking, sessions, the_clinic=ny, the_patient=the_patient),
        settings=SETTINGS,
    ).body
    assert "Tue Mar 3 10:00 AM" in body and "Tue Mar 10 10:00 AM" in body


def test_the_ics_has_one_event_per_session_in_utc() -> None:
    sessions = london_course_across_dst()
    row = Row(kind="booking_confirmation", channel="email")
    composed = render(row, context(row, sessions), settings=SETTINGS)
    (attachment,) = composed.attachments
    assert (attachment.maintype, attachment.subtype) == ("text", "calendar")
    assert attachment.params == {"method": "REQUEST"}
    calendar, found = events(composed.attachments)
    assert str(calendar["method"]) == "REQUEST"
    assert len(found) == len(sessions)
    for event, session in zip(found, sessions, strict=True):
        assert event.decoded("dtstart") == session.starts_at
        assert event.decoded("dtend") == session.ends_at
        assert event.decoded("dtstart").utcoffset() == timedelta(0)
        assert str(event["uid"]) == appointment_uid(session.id, HOST)
        assert int(event["sequence"]) == session.version
        assert str(event["summary"]) == f"Appointment at {context(row, []).clinic.name}"
        assert str(event["location"]).startswith("Unit 14, 250 Great Portland Street")
        assert str(event["status"]) == "CONFIRMED"
        assert TREATMENT_NAME not in event.to_ical().decode()
    raw = attachment.content.decode()
    assert "DTSTART:20260331T090000Z" in raw and "DTSTART:20260324T100000Z" in raw


def test_a_moved_appointment_keeps_its_uid_with_a_higher_sequence() -> None:
    before = appointment(42, datetime(2026, 3, 3, 10, 0, tzinfo=UTC), version=2)
    after = replace(
        before,
        starts_at=before.starts_at + timedelta(days=2),
        ends_at=before.ends_at + timedelta(days=2),
        version=3,
    )
    row = Row(kind="booking_confirmation", channel="email", appointment_id=42)
    _, (first,) = events(render(row, context(row, [before]), settings=SETTINGS).attachments)
    moved = Row(kind="reschedule_notice", channel="email", appointment_id=42)
    _, (second,) = events(render(moved, context(moved, [after]), settings=SETTINGS).attachments)
    assert str(first["uid"]) == str(second["uid"]) == f"appointment-42@{HOST}"
    assert int(second["sequence"]) > int(first["sequence"])
    assert second.decoded("dtstart") == datetime(2026, 3, 5, 10, 0, tzinfo=UTC)


def test_a_cancellation_removes_the_events() -> None:
    cancelled = [
        appointment(7, datetime(2026, 3, 3, 10, 0, tzinfo=UTC), status="cancelled", version=4),
        appointment(8, datetime(2026, 3, 10, 10, 0, tzinfo=UTC), status="cancelled", version=4),
    ]
    row = Row(kind="cancellation_notice", channel="email", appointment_id=7)
    composed = render(row, context(row, cancelled), settings=SETTINGS)
    calendar, found = events(composed.attachments)
    assert str(calendar["method"]) == "CANCEL"
    assert composed.attachments[0].params == {"method": "CANCEL"}
    assert [str(e["status"]) for e in found] == ["CANCELLED", "CANCELLED"]
    assert [int(e["sequence"]) for e in found] == [4, 4]


def test_reminders_and_staff_alerts_carry_no_calendar() -> None:
    sessions = course(datetime(2026, 3, 3, 10, 0, tzinfo=UTC))[:1]
    for kind, recipient in (("reminder_24h", None), ("staff_alert", "oncall@clinic.test")):
        row = Row(kind=kind, channel="email", recipient=recipient, context={"text": "x"})
        assert render(row, context(row, sessions), settings=SETTINGS).attachments == []


def test_the_calendar_survives_the_trip_through_a_mime_message() -> None:
    sessions = london_course_across_dst()
    row = Row(kind="booking_confirmation", channel="email")
    composed = render(row, context(row, sessions), settings=SETTINGS)
    assert composed.to is not None and composed.subject is not None
    message = build_message(
        sender="Clinic <clinic@regimen.test>",
        to=composed.to,
        subject=composed.subject,
        text=composed.body,
        html=composed.html,
        attachments=composed.attachments,
    )
    parsed = message_from_bytes(message.as_bytes(), policy=policy.default)
    (part,) = list(parsed.iter_attachments())  # type: ignore[attr-defined]
    assert part.get_content_type() == "text/calendar"
    assert part.get_param("method") == "REQUEST"
    assert part.get_filename() == "appointments.ics"
    calendar = Calendar.from_ical(part.get_content())
    assert len(list(calendar.walk("VEVENT"))) == 4
    organizer = list(calendar.walk("VEVENT"))[0]["organizer"]
    assert str(organizer) == f"mailto:{SETTINGS.email_from}"
