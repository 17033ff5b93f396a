"""Reading a check-in answer and timing a plan step: pure functions, checked against what a
patient writes and against both clock changes."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from shared.domain.check_ins import inside_window, read_answer, step_due
from shared.links import LinkError, LinkInvalid, check_in_answer_token, open_check_in_link
from shared.store.check_in_plans import DEFAULT_PLAN, PlanStep
from shared.store.check_ins import CheckIn

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")


def first_check_in() -> CheckIn:
    spec = DEFAULT_PLAN[0]
    now = datetime(2027, 3, 27, 10, tzinfo=UTC)
    return CheckIn(
        id=1, clinic_id=1, patient_id=1, appointment_id=1, step_id=1, position=1,
        question=spec.question, answers=spec.answers, nudge_after_hours=24, call_after_hours=24,
        due_at=now, channel="sms", status="sent", sent_at=now, nudged_at=None, answer_text=None,
        answer_digit=None, tier=None, answered_at=None, answered_via=None, call_task_id=None,
        created_at=now, updated_at=now,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "digit", "tier"),
    [
        ("1", 1, "fine"),
        ("1.", 1, "fine"),
        (" 2 ", 2, "routine"),
        ("3!", 3, "urgent"),
        ("2 - it is swollen", 2, "routine"),
        ("1 but my lips are swelling", 1, "emergency"),  # words can only raise the tier
        ("I can't breathe properly", None, "emergency"),
        ("my throat feels tight", None, "emergency"),
        ("there is pus", None, "urgent"),
        ("itchy, is that normal?", None, "routine"),
        ("7", None, "routine"),  # not one of the answers: words for a person to read
    ],
)
def test_what_a_patient_writes_gets_its_tier(text: str, digit: int | None, tier: str) -> None:
    triage = read_answer(first_check_in(), text)
    assert (triage.digit, triage.tier) == (digit, tier)


def test_words_without_a_number_are_for_a_person_to_read() -> None:
    assert read_answer(first_check_in(), "itchy").free_text
    assert not read_answer(first_check_in(), "2").free_text


def days_step(days: int, at: time | None = None) -> PlanStep:
    return PlanStep(position=1, question="q", answers=[], offset_days=days, at_local_time=at)


def test_calendar_days_keep_the_local_hour_across_the_autumn_change() -> None:
    """Completed Friday 29 October 2027 15:00 New York (EDT); clocks go back on 7 November."""
    completed = datetime(2027, 10, 29, 15, tzinfo=NEW_YORK).astimezone(UTC)
    due = step_due(days_step(21), completed, NEW_YORK)
    assert due.astimezone(NEW_YORK).replace(tzinfo=None) == datetime(2027, 11, 19, 15)
    assert due == datetime(2027, 11, 19, 20, tzinfo=UTC)  # EST: UTC-5
    fixed = step_due(days_step(7, time(9, 30)), completed, NEW_YORK)
    assert fixed.astimezone(NEW_YORK).replace(tzinfo=None) == datetime(2027, 11, 5, 9, 30)


def test_a_moment_in_quiet_hours_moves_to_the_next_opening() -> None:
    late = datetime(2027, 3, 29, 19, 30, tzinfo=UTC)  # 20:30 BST
    assert inside_window(late, LONDON, time(8), time(20)) == datetime(2027, 3, 30, 7, tzinfo=UTC)
    early = datetime(2027, 3, 30, 5, tzinfo=UTC)  # 06:00 BST
    assert inside_window(early, LONDON, time(8), time(20)) == datetime(2027, 3, 30, 7, tzinfo=UTC)
    inside = datetime(2027, 3, 30, 12, tzinfo=UTC)
    assert inside_window(inside, LONDON, time(8), time(20)) == inside


def test_an_answer_link_names_its_check_in_and_answer_and_nothing_else_opens() -> None:
    secret = "s" * 40
    expires = datetime(2027, 5, 1, tzinfo=UTC)
    token = check_in_answer_token(secret, 42, 3, expires_at=expires)
    link = open_check_in_link(secret, token, now=datetime(2027, 4, 1, tzinfo=UTC))
    assert (link.check_in_id, link.digit) == (42, 3)
    with pytest.raises(LinkInvalid):
        open_check_in_link("t" * 40, token, now=datetime(2027, 4, 1, tzinfo=UTC))
    with pytest.raises(LinkInvalid):
        open_check_in_link(secret, token[:-2] + "AA", now=datetime(2027, 4, 1, tzinfo=UTC))
    with pytest.raises(LinkError):
        open_check_in_link(secret, token, now=datetime(2027, 5, 2, tzinfo=UTC))
