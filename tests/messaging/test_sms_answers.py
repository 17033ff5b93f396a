"""The answers to patients' SMS replies: within two GSM-7 segments with the longest realistic
data (the clinic's name, first names, several sessions, a long private link), and only the
minimum necessary."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.notifier.reply_answers import AnswerContext, compose, when_text
from shared.messaging.render import TEMPLATES_DIR
from shared.sms_segments import is_gsm7, segment_count
from tests.conftest import make_settings
from tests.messaging.factories import (
    LONG_CLINIC,
    LONG_FIRST_NAME,
    LONG_LINK,
    TREATMENT_NAME,
    clinic,
    course,
    patient,
)

FIRST = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
SETTINGS = make_settings()
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _answers(**patient_fields: Any) -> AnswerContext:
    return AnswerContext(clinic(), "+447911123456", patient(**patient_fields), SETTINGS, NOW)


def worst_cases(ctx: AnswerContext) -> list[tuple[str, dict[str, Any]]]:
    three = when_text(course(FIRST)[:3], ctx)
    one = when_text(course(FIRST)[:1], ctx)
    four = ", ".join(f"{n} {LONG_FIRST_NAME} ({one})" for n in range(1, 5))
    four_names = ", ".join(f"{n} {LONG_FIRST_NAME}" for n in range(1, 5))
    return [
        ("answer_confirmed", {"when": three, "several": True}),
        ("answer_already_confirmed", {"when": three, "several": True}),
        ("answer_reschedule", {"when": three, "link": LONG_LINK}),
        ("answer_cancelled", {"when": one, "link": LONG_LINK}),
        ("answer_cancel_refused", {"when": one, "notice_hours": 48}),
        ("answer_cancel_which", {"when": three, "link": LONG_LINK}),
        ("answer_help", {}),
        ("answer_acknowledged", {}),
        ("answer_emergency", {}),
        ("answer_which", {"options": four, "names": four_names, "numbers": "1, 2, 3 or 4"}),
        ("answer_proposal_booked", {"when": one}),
        ("answer_proposal_released", {"when": one, "link": LONG_LINK}),
        ("opt_in_confirmation", {}),
        # the answers to an aftercare check-in, by tier
        ("answer_check_in_fine", {}),
        ("answer_check_in_routine", {}),
        ("answer_check_in_urgent", {}),
        ("answer_check_in_emergency", {}),
    ]


def test_every_answer_template_has_a_worst_case_here() -> None:
    stems = {p.name.split(".sms.")[0] for p in TEMPLATES_DIR.glob("answer_*.sms.en.j2")}
    assert stems <= {stem for stem, _ in worst_cases(_answers())}, stems


@pytest.mark.parametrize("zone", [None, "America/Los_Angeles"])
def test_every_answer_fits_two_gsm7_segments(zone: str | None) -> None:
    ctx = _answers(time_zone=zone)
    for template, variables in worst_cases(ctx):
        body = compose(template, ctx, **variables)
        assert is_gsm7(body), (template, body)
        assert LONG_CLINIC in body, (template, body)
        assert TREATMENT_NAME.lower() not in body.lower(), body
        assert segment_count(body) <= 2, (template, len(body), body)


def test_a_patient_in_another_zone_reads_the_time_with_its_zone() -> None:
    ctx = _answers(time_zone="America/Los_Angeles")
    assert when_text(course(FIRST)[:1], ctx) == "Tue 3 Mar 02:00 PST"
    assert when_text(course(FIRST)[:1], _answers()) == "Tue 3 Mar 10:00"


def test_the_emergency_answer_names_the_country_s_number() -> None:
    ctx = AnswerContext(
        clinic(region="US", phone="+12125550123"), "+12125550188", None, SETTINGS, NOW
    )
    body = compose("answer_emergency", ctx)
    assert "call 911 now" in body and "(212) 555-0123" in body
