"""What patients read in an SMS: within two GSM-7 segments with the longest realistic data,
only the minimum necessary (never the treatment), and a shorter wording when the full one
would not fit."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.messaging import RenderError, TemplateMissing, render
from shared.messaging.render import TEMPLATES_DIR
from shared.sms_segments import is_gsm7, segment_count
from shared.store.appointments import Appointment
from tests.conftest import make_settings
from tests.messaging.factories import (
    LONG_CLINIC,
    LONG_FIRST_NAME,
    TREATMENT_CODE,
    TREATMENT_NAME,
    Row,
    appointment,
    clinic,
    context,
    course,
    patient,
)

SETTINGS = make_settings()
FIRST = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)  # Tue 3 Mar, 10:00 in London
REPLY_TEXT = (
    "If you have trouble breathing or swelling of your lips, tongue or throat, call 999 now. "
    "We have told the clinician on call, who will phone you."
)
ALERT_TEXT = (
    "Emergency reply from patient after session 3: 'my lips and tongue are swelling and I feel "
    "faint, throat feels tight, what should I do?' Immediate reply sent telling them to call 999. "
) * 3
# Treatment details a caller might leave in a row's context: templates must not print them.
LEAKY_CONTEXT = {"treatment": TREATMENT_NAME, "treatment_code": TREATMENT_CODE}
AFTERCARE_CONTEXT = {
    **LEAKY_CONTEXT,
    "completed_at": FIRST.isoformat(),
    "aftercare": {
        "instructions": ["After mesotherapy, no hair dye for 7 days.", "No lidocaine cream."],
        "normal_course": "Forehead swelling for 1 to 4 days after mesotherapy.",
        "normal_days": 5,
        "call_when": ["A fever."],
        "emergency_signs": ["Trouble breathing."],
    },
}


def scattered_course() -> list[Appointment]:
    """Eight sessions on two-digit days at different times: nothing to group, longest dates."""
    starts = [
        FIRST + timedelta(days=7 * i + 7, hours=i % 4, minutes=15 * (i % 3)) for i in range(8)
    ]
    return [appointment(200 + i, s, position=i + 1) for i, s in enumerate(starts)]


def scenarios(sessions: list[Appointment]) -> list[tuple[str, Row, list[Appointment]]]:
    """One worst case per default SMS template (keyed by template file stem)."""
    one = sessions[:1]
    three = sessions[:3]
    moved_from = {"previous_starts_at": (sessions[0].starts_at - timedelta(days=2)).isoformat()}
    return [
        ("booking_confirmation", Row(kind="booking_confirmation", context=LEAKY_CONTEXT), sessions),
        ("booking_confirmation", Row(kind="booking_confirmation"), one),
        ("reminder_72h", Row(kind="reminder_72h", context=LEAKY_CONTEXT), one),
        ("reminder_24h", Row(kind="reminder_24h", context=LEAKY_CONTEXT), one),
        ("reminder_2h", Row(kind="reminder_2h", context=LEAKY_CONTEXT), one),
        ("reminder_merged", Row(kind="reminder_72h", context=LEAKY_CONTEXT), three),
        ("reminder_merged", Row(kind="reminder_24h"), sessions[:4]),
        ("cancellation_notice", Row(kind="cancellation_notice", context=LEAKY_CONTEXT), one),
        ("cancellation_notice", Row(kind="cancellation_notice"), sessions),
        ("reschedule_notice", Row(kind="reschedule_notice", context=moved_from), one),
        ("reschedule_notice", Row(kind="reschedule_notice"), sessions),
        (
            "staff_alert",
            Row(kind="staff_alert", recipient="+447700900001", context={"text": ALERT_TEXT}),
            one,
        ),
        ("reply", Row(kind="reply", appointment_id=None, context={"text": REPLY_TEXT}), []),
        ("opt_in_confirmation", Row(kind="opt_in_confirmation", appointment_id=None), []),
        ("new_link", Row(kind="new_link", appointment_id=None), []),
        # an adverse event holds the next session: call the clinic (no treatment, no symptoms)
        (
            "call_before_next_visit",
            Row(kind="call_before_next_visit", appointment_id=None, context=LEAKY_CONTEXT),
            [],
        ),
        # after the course's last session (which it follows and does not talk about)
        ("maintenance_reminder", Row(kind="maintenance_reminder", context=LEAKY_CONTEXT), one),
        (
            "session_proposal",
            Row(
                kind="session_proposal",
                context={**LEAKY_CONTEXT, "answer_by": (FIRST - timedelta(days=3)).isoformat()},
            ),
            one,
        ),
        ("proposal_released", Row(kind="proposal_released", context=LEAKY_CONTEXT), one),
        # after the completed session; the instructions (and the treatment) are for the page
        ("aftercare", Row(kind="aftercare", context=AFTERCARE_CONTEXT), one),
        (
            "contact_changed",
            Row(
                kind="contact_changed",
                appointment_id=None,
                recipient="+447700900999",
                context={"fields": ["email", "mobile"], "changed_at": FIRST.isoformat()},
            ),
            [],
        ),
    ]


WORLDS = {
    # London clinic, patient at home, one time for the whole course
    "london": {"the_clinic": clinic(), "the_patient": patient()},
    # New York clinic (US dates, 12-hour clock) and a patient in California with a UK mobile:
    # zone names after every time, the clinic's number in international format.
    "new-york": {
        "the_clinic": clinic(
            zone="America/New_York",
            phone="+12125550123",
            region="US",
            address="1250 Avenue of the Americas, Suite 4100, New York, NY 10020",
        ),
        "the_patient": patient(time_zone="America/Los_Angeles"),
    },
}


def render_sms(row: Row, sessions: list[Appointment], **world: Any) -> str:
    composed = render(row, context(row, sessions, **world), settings=SETTINGS)
    assert composed.channel == "sms"
    assert composed.segments == segment_count(composed.body)
    return composed.body


def test_every_default_sms_template_has_a_worst_case_below() -> None:
    # (the answers to patients' replies have theirs in test_sms_answers.py; the check-in, whose
    # clinic-written question is never cut, in test_check_in_sms.py)
    stems = {p.name.split(".sms.")[0] for p in TEMPLATES_DIR.glob("*.sms.en.j2")}
    answers = {stem for stem in stems if stem.startswith("answer_")}
    assert stems - answers - {"check_in"} == {stem for stem, _, _ in scenarios(course(FIRST))}


@pytest.mark.parametrize("world", sorted(WORLDS))
@pytest.mark.parametrize("dates", ["weekly", "scattered"])
def test_every_sms_fits_two_gsm7_segments_with_worst_case_data(world: str, dates: str) -> None:
    sessions = course(FIRST) if dates == "weekly" else scattered_course()
    for stem, row, covered in scenarios(sessions):
        body = render_sms(row, covered, **WORLDS[world])
        assert is_gsm7(body), (stem, body)
        assert segment_count(body) <= 2, (stem, len(body), body)
        assert LONG_CLINIC in body, (stem, body)


def test_no_sms_names_the_treatment_or_a_medicine() -> None:
    for _, row, covered in scenarios(course(FIRST)):
        body = render_sms(row, covered, **WORLDS["london"])
        for secret in (TREATMENT_NAME, "mesotherapy", TREATMENT_CODE, "finasteride", "lidocaine"):
            assert secret.lower() not in body.lower(), body


def test_a_reminder_names_the_first_name_clinic_time_phone_and_link() -> None:
    row = Row(kind="reminder_72h")
    body = render_sms(row, course(FIRST)[:1], **WORLDS["london"])
    assert body.startswith(f"Hi {LONG_FIRST_NAME}, reminder:")
    assert "Tue 3 Mar 10:00" in body
    assert "Reply C to confirm, R to reschedule" in body
    assert "020 7946 0000" in body  # national format for a UK mobile
    assert "https://appointments.regimen-demo-clinic.co.uk/s/Kx9fQ2mZ7pLwR4tY" in body
    assert "Worthington" not in body  # first name only


def test_booking_confirmation_lists_every_session_when_it_fits() -> None:
    short_clinic = clinic(name="Hair Clinic")
    row = Row(kind="booking_confirmation")
    body = render_sms(
        row,
        course(FIRST),
        the_clinic=short_clinic,
        the_patient=patient(first_name="Ada"),
        link="https://r.example/s/abc",
    )
    for day in ("3", "10", "17", "24"):
        assert f"Tue {day} Mar 10:00" in body
    assert "Tue 19 May 10:00" in body


def test_booking_confirmation_groups_dates_then_summarises_when_too_long() -> None:
    row = Row(kind="booking_confirmation")
    grouped = render_sms(row, course(FIRST), **WORLDS["london"])
    assert "3, 10, 17, 24 Mar; 7, 21 Apr; 5, 19 May at 10:00" in grouped
    summary = render_sms(row, scattered_course(), **WORLDS["london"])
    assert "your 8 sessions at" in summary
    assert "are booked from Tue 10 Mar 10:00. All dates by email and at https://" in summary


def test_summary_does_not_promise_an_email_to_a_patient_without_one() -> None:
    row = Row(kind="booking_confirmation")
    body = render_sms(row, scattered_course(), the_patient=patient(email=None))
    assert "All dates at https://" in body and "email" not in body


def test_merged_reminder_lists_each_session_and_asks_for_confirmation() -> None:
    row = Row(kind="reminder_72h", context={"merged_appointment_ids": [102]})
    body = render_sms(row, course(FIRST)[:2], **WORLDS["london"])
    assert "your appointments at" in body
    assert "Tue 3 Mar 10:00, Tue 10 Mar 10:00" in body
    assert "Reply C to confirm, R to reschedule" in body
    plain = render_sms(
        replace(row, kind="reminder_24h", template="reminder_24h"), course(FIRST)[:2]
    )
    assert "Reply C" not in plain


def test_reschedule_notice_says_the_new_and_old_time() -> None:
    old = FIRST - timedelta(days=2)
    row = Row(kind="reschedule_notice", context={"previous_starts_at": {"101": old.isoformat()}})
    body = render_sms(row, course(FIRST)[:1], the_clinic=clinic(name="Hair Clinic"))
    assert "on Sun 1 Mar 10:00 has moved to Tue 3 Mar 10:00" in body


def test_maintenance_reminder_says_to_book_with_the_booking_form_and_phone() -> None:
    row = Row(kind="maintenance_reminder", context=LEAKY_CONTEXT)
    body = render_sms(row, course(FIRST)[-1:], **WORLDS["london"])
    assert body.startswith(f"Hi {LONG_FIRST_NAME}, it is time to book your follow-up visit at")
    # The booking form books a new visit; the private link cannot, so it is not offered for it.
    assert f"Book online at {SETTINGS.public_url}/ or call 020 7946 0000" in body
    assert "/s/" not in body
    # The session it follows is history: no date of it, no "see you".
    assert "May" not in body


def test_a_released_proposal_gives_the_private_link_to_book_and_the_phone() -> None:
    # The private page books the course's next session once the held time is let go.
    row = Row(kind="proposal_released", context=LEAKY_CONTEXT)
    body = render_sms(row, course(FIRST)[1:2], **WORLDS["london"])
    assert "we have released" in body and "the time we kept for your next session" in body
    assert "https://appointments.regimen-demo-clinic.co.uk/s/Kx9fQ2mZ7pLwR4tY" in body
    assert "020 7946 0000" in body


def test_opt_in_confirmation_carries_the_required_wording() -> None:
    body = render_sms(Row(kind="opt_in_confirmation", appointment_id=None), [])
    assert body.startswith(LONG_CLINIC)
    for phrase in (
        "Msg frequency varies.",
        "Msg & data rates may apply.",
        "Reply HELP for help, STOP to opt out.",
    ):
        assert phrase in body


def test_a_reply_is_never_cut_short() -> None:
    body = render_sms(Row(kind="reply", appointment_id=None, context={"text": REPLY_TEXT}), [])
    assert body.endswith(REPLY_TEXT)


def test_a_long_staff_alert_is_shortened_to_fit_and_says_so() -> None:
    row = Row(kind="staff_alert", recipient="+447700900001", context={"text": ALERT_TEXT})
    body = render_sms(row, course(FIRST)[:1])
    assert segment_count(body) <= 2
    assert "..." in body and "#7" in body


def test_typographic_characters_become_gsm7_look_alikes() -> None:
    row = Row(kind="reminder_24h")
    body = render_sms(
        row,
        course(FIRST)[:1],
        the_clinic=clinic(name="St John’s – Hair Clinic"),
        the_patient=patient(first_name="Zoë"),
    )
    assert is_gsm7(body)
    assert "Hi Zoe," in body and "St John's - Hair Clinic" in body


def test_a_name_gsm7_cannot_spell_is_kept_as_written() -> None:
    row = Row(kind="reminder_24h")
    body = render_sms(
        row,
        course(FIRST)[:1],
        the_clinic=clinic(name="Hair Clinic"),
        the_patient=patient(first_name="王芳"),
        link="https://r.example/s/abc",
    )
    assert "王芳" in body and not is_gsm7(body)


def test_a_staff_alert_addressed_to_the_patient_is_refused() -> None:
    the_patient = patient()
    row = Row(kind="staff_alert", recipient=the_patient.mobile, context={"text": "x"})
    with pytest.raises(RenderError):
        render(row, context(row, course(FIRST)[:1], the_patient=the_patient), settings=SETTINGS)


def test_a_reminder_without_its_appointment_cannot_be_rendered() -> None:
    row = Row(kind="reminder_24h")
    with pytest.raises(RenderError):
        render(row, context(row, []), settings=SETTINGS)


def test_a_kind_without_a_template_for_the_channel_is_reported() -> None:
    row = Row(kind="opt_in_confirmation", channel="email", appointment_id=None)
    with pytest.raises(TemplateMissing):
        render(row, context(row, []), settings=SETTINGS)
    bad = Row(kind="../etc/passwd")
    with pytest.raises(TemplateMissing):
        render(bad, context(bad, []), settings=SETTINGS)
