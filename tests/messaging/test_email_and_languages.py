"""Emails: text and HTML parts, HTML escaped, the clinic in the footer, subjects that never name
the treatment; and the language chain (a missing language falls back to English)."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from jinja2 import ChoiceLoader, DictLoader

from shared.messaging import render
from shared.messaging.context import resolve_recipient, self_service_url
from shared.messaging.render import language_candidates
from tests.conftest import make_settings
from tests.messaging.factories import (
    TREATMENT_CODE,
    TREATMENT_NAME,
    Row,
    clinic,
    context,
    course,
    patient,
)

# The package exports the function `render`, which hides the module of the same name.
render_module = importlib.import_module("shared.messaging.render")
SETTINGS = make_settings()
SESSIONS = course(datetime(2026, 3, 3, 10, 0, tzinfo=UTC))
SCRIPT = "<script>alert('x')</script>"
EMAIL_KINDS = (
    ("booking_confirmation", SESSIONS),
    ("reminder_72h", SESSIONS[:1]),
    ("reminder_24h", SESSIONS[:1]),
    ("reminder_2h", SESSIONS[:1]),
    ("reminder_72h", SESSIONS[:3]),  # merged
    ("cancellation_notice", SESSIONS[:1]),
    ("reschedule_notice", SESSIONS[:2]),
    ("reply", []),
    ("maintenance_reminder", SESSIONS[-1:]),
    ("session_proposal", SESSIONS[1:2]),
    ("proposal_released", SESSIONS[1:2]),
    ("call_before_next_visit", []),
)


def email(kind: str, sessions: list, **kw: object):  # type: ignore[no-untyped-def,type-arg]
    row = Row(
        kind=kind,
        channel="email",
        appointment_id=sessions[0].id if sessions else None,
        context={"treatment": TREATMENT_NAME, "text": "See you soon."},
    )
    return render(row, context(row, sessions, **kw), settings=SETTINGS)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kind", "sessions"), EMAIL_KINDS)
def test_every_patient_email_has_text_and_html_and_the_clinic_footer(
    kind: str,
    sessions: list,  # type: ignore[type-arg]
) -> None:
    composed = email(kind, sessions)
    assert composed.channel == "email" and composed.segments is None
    assert composed.to == "max@example.com"
    assert composed.subject and "\n" not in composed.subject
    assert composed.html is not None and composed.html.lstrip().startswith("<!DOCTYPE html>")
    for part in (composed.body, composed.html):
        assert "020 7946 0000" in part
        assert "250 Great Portland Street" in part
        assert "Hello Maximiliano-Alessandro," in part
    for secret in (TREATMENT_NAME, "mesotherapy", TREATMENT_CODE):
        assert secret.lower() not in composed.subject.lower()
        assert secret.lower() not in composed.body.lower()
        assert secret.lower() not in composed.html.lower()


def test_booking_email_lists_every_session() -> None:
    composed = email("booking_confirmation", SESSIONS)
    assert composed.subject == (
        "Your 8 appointments at St Mary-Anne's Advanced Hair Restoration & Scalp Clinic Ltd "
        "are booked"
    )
    assert composed.body.count(" at 10:00") == 8
    assert composed.html is not None and composed.html.count("<li>") == 8


def test_html_is_escaped_and_plain_text_is_not() -> None:
    composed = email(
        "booking_confirmation",
        SESSIONS[:1],
        the_patient=patient(first_name=SCRIPT),
        the_clinic=clinic(name="Hair & Scalp <Clinic>"),
    )
    assert composed.html is not None
    assert "<script>" not in composed.html
    assert "Hello &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;," in composed.html
    assert "Hair &amp; Scalp &lt;Clinic&gt;" in composed.html
    # plain text is never interpreted: it keeps what the patient typed
    assert f"Hello {SCRIPT}," in composed.body
    assert composed.subject == "Your appointment at Hair & Scalp <Clinic> is booked"


def test_staff_alert_email_names_the_patient_for_staff_only() -> None:
    row = Row(
        kind="staff_alert",
        channel="email",
        recipient="oncall@clinic.test",
        context={"title": "Emergency reply", "text": "Lips swelling <now>"},
    )
    composed = render(row, context(row, SESSIONS[:1]), settings=SETTINGS)
    assert composed.to == "oncall@clinic.test"
    assert composed.subject is not None and composed.subject.startswith("[Regimen alert] Emergency")
    assert "Maximiliano-Alessandro" not in composed.subject  # previews show subjects
    assert "Patient: Maximiliano-Alessandro Worthington-Smythe (#7)" in composed.body
    assert composed.html is not None and "Lips swelling &lt;now&gt;" in composed.html
    assert "Manage your appointments" not in composed.body


def test_language_candidates() -> None:
    assert language_candidates("pt-BR") == ["pt-BR", "pt", "en"]
    assert language_candidates("fr") == ["fr", "en"]
    assert language_candidates("en") == ["en"]
    assert language_candidates("../../etc") == ["en"]
    assert language_candidates("") == ["en"]


def test_a_missing_language_falls_back_to_english() -> None:
    row = Row(kind="reminder_24h", language="fr")
    composed = render(row, context(row, SESSIONS[:1]), settings=SETTINGS)
    assert composed.language == "en"
    assert "see you at" in composed.body
    mail = render(
        Row(kind="reminder_24h", channel="email", language="pt-BR"),
        context(row, SESSIONS[:1]),
        settings=SETTINGS,
    )
    assert mail.language == "en" and mail.subject is not None
    assert mail.subject.startswith("Reminder:")


@pytest.fixture
def french() -> Iterator[None]:
    """A French SMS template and only half of a French email family, as a translator would
    add them (beside the English ones)."""
    extra = DictLoader(
        {
            "reminder_24h.sms.fr.j2": "Bonjour {{ first_name }}, RDV chez {{ clinic_name }} "
            "le {{ session.short }}. {{ link }}",
            "reminder_24h.email.fr.subject.j2": "Rappel",
        }
    )
    sms_env, email_env = render_module._SMS_ENV, render_module._EMAIL_ENV
    old = sms_env.loader, email_env.loader
    sms_env.loader = ChoiceLoader([extra, old[0]])  # type: ignore[list-item]
    email_env.loader = ChoiceLoader([extra, old[1]])  # type: ignore[list-item]
    yield
    sms_env.loader, email_env.loader = old


@pytest.mark.usefixtures("french")
def test_a_language_with_its_own_template_uses_it_and_a_half_family_does_not() -> None:
    row = Row(kind="reminder_24h", language="fr-CA")
    composed = render(
        row, context(row, SESSIONS[:1], the_patient=patient(first_name="Zoé")), settings=SETTINGS
    )
    assert composed.language == "fr"
    assert composed.body.startswith("Bonjour Zoé, RDV chez")
    # French has no date names yet: the English ones until someone adds them
    assert "Tue 3 Mar 10:00" in composed.body
    mail = render(
        Row(kind="reminder_24h", channel="email", language="fr"),
        context(row, SESSIONS[:1]),
        settings=SETTINGS,
    )
    assert mail.language == "en" and mail.subject != "Rappel"


@pytest.mark.parametrize("channel", ["email", "sms"])
def test_a_contact_change_notice_goes_to_the_old_contact_without_link_or_names(
    channel: str,
) -> None:
    """The old address or number may be someone else's by now: the notice says what changed and
    when, and how to reach the clinic; it names nobody and carries no link or new contact."""
    old = "old-address@example.com" if channel == "email" else "+447700900999"
    row = Row(
        kind="contact_changed",
        channel=channel,
        appointment_id=None,
        recipient=old,
        context={"fields": ["email"], "changed_at": "2026-03-03T10:00:00+00:00"},
    )
    the_patient = patient()
    ctx = context(row, [], the_patient=the_patient)
    now = datetime(2026, 3, 3, 10, 5, tzinfo=UTC)
    ctx = dataclasses.replace(
        ctx,
        recipient=resolve_recipient(row, the_patient),
        self_service_url=self_service_url(row, the_patient, SETTINGS, now),
    )
    assert ctx.recipient == old and ctx.self_service_url == ""
    composed = render(row, ctx, settings=SETTINGS)
    assert composed.to == old
    for part in (composed.body, composed.html or "", composed.subject or ""):
        assert "/s/" not in part and "Manage your appointments" not in part
        assert the_patient.first_name not in part and the_patient.email not in part
    assert "email address" in composed.body and "Tue 3 Mar at 10:00" in composed.body
    assert "020 7946 0000" in composed.body
