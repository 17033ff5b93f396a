"""The aftercare messages as patients read them: the SMS with the clinic, the link, the phone and
the emergency number of the clinic's country and nothing about the treatment; the email with the
template's full text, word for word; "today's" only when it is still the session's day."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.messaging import Composed, RenderError, render
from tests.conftest import make_settings
from tests.messaging.factories import (
    LONG_AFTERCARE_LINK,
    TREATMENT_NAME,
    Row,
    appointment,
    clinic,
    context,
    patient,
)

SETTINGS = make_settings()
SESSION = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)  # Tue 3 Mar, 10:00 in London
TEMPLATE = {
    "instructions": ["Keep the scalp dry for 24 hours.", "No hair dye for 14 days."],
    "normal_course": "Redness and mild swelling for 2 to 5 days.",
    "normal_days": 5,
    "call_when": ["A fever of 38 °C or more.", "Pus or spreading redness."],
    "emergency_signs": ["Difficulty breathing.", "Swelling of your lips or tongue."],
    "template_version": 3,
}


def aftercare_row(channel: str = "sms") -> Row:
    return Row(
        kind="aftercare",
        channel=channel,
        context={
            "treatment": TREATMENT_NAME,
            "completed_at": (SESSION + timedelta(hours=1)).isoformat(),
            "aftercare": TEMPLATE,
        },
    )


def composed(channel: str = "sms", **world: Any) -> Composed:
    row = aftercare_row(channel)
    session = appointment(100, SESSION)
    return render(row, context(row, [session], **world), settings=SETTINGS)


def test_the_sms_has_clinic_link_phone_and_emergency_number_and_no_treatment() -> None:
    body = composed(
        the_clinic=clinic(name="Hair Clinic"),
        the_patient=patient(first_name="Ada"),
        composed_at=SESSION + timedelta(hours=1, minutes=15),
    ).body
    assert body.startswith("Hi Ada, Hair Clinic: aftercare instructions for today's session: ")
    assert LONG_AFTERCARE_LINK in body
    assert "call 020 7946 0000" in body and body.endswith("In an emergency call 999.")
    for secret in (TREATMENT_NAME, "dye", "scalp", "fever"):
        assert secret.lower() not in body.lower()


def test_the_emergency_number_is_the_clinics_countrys() -> None:
    american = clinic(zone="America/New_York", phone="+12125550123", region="US")
    german = clinic(zone="Europe/Berlin", phone="+493012345678", region="DE")
    assert composed(the_clinic=american).body.endswith("In an emergency call 911.")
    assert composed(the_clinic=german).body.endswith("In an emergency call 112.")


def test_sent_the_next_morning_it_does_not_say_today() -> None:
    morning = composed(composed_at=SESSION + timedelta(hours=22)).body
    assert "for yesterday's session" in morning and "today" not in morning
    later = composed(composed_at=SESSION + timedelta(days=3)).body
    assert "for your session on Tue 3 Mar" in later


def test_the_email_carries_every_line_of_the_template_and_no_treatment_in_its_subject() -> None:
    email = composed("email", the_clinic=clinic(name="Hair Clinic"))
    assert email.subject == "Your aftercare instructions from Hair Clinic"
    for part in (email.body, email.html or ""):
        for line in [
            *TEMPLATE["instructions"],
            TEMPLATE["normal_course"],
            *TEMPLATE["call_when"],
            *TEMPLATE["emergency_signs"],
        ]:
            assert line in part, line
        assert LONG_AFTERCARE_LINK in part
        assert "In an emergency call" in part and "999" in part
        assert TREATMENT_NAME not in part
    assert "If it lasts longer than 5 days, call us." in email.body
    assert email.attachments == []  # no calendar invitation for a session that is over


def test_without_its_link_the_sms_is_not_composed_and_the_email_promises_no_page() -> None:
    row = aftercare_row("sms")
    session = appointment(100, SESSION)
    ctx = dataclasses.replace(context(row, [session]), aftercare_url="")
    with pytest.raises(RenderError):
        render(row, ctx, settings=SETTINGS)
    email_row = aftercare_row("email")
    email_ctx = dataclasses.replace(context(email_row, [session]), aftercare_url="")
    email = render(email_row, email_ctx, settings=SETTINGS)
    assert TEMPLATE["instructions"][0] in email.body
    assert "/aftercare/" not in email.body and "aftercare page" not in (email.html or "")
