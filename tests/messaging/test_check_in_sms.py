"""The check-in SMS with worst-case data (the longest clinic name, a long first name): the
clinic's whole question and the emergency sentence are always there (a long question may take a
third segment rather than lose them), it is GSM-7, and it names no treatment."""

from __future__ import annotations

import pytest

from shared.sms_segments import is_gsm7, segment_count
from shared.store.check_in_plans import DEFAULT_PLAN
from tests.messaging.factories import LONG_CLINIC, TREATMENT_NAME, Row
from tests.messaging.test_sms_content import FIRST, WORLDS, course, render_sms


@pytest.mark.parametrize("world", sorted(WORLDS))
@pytest.mark.parametrize("nudge", [False, True])
def test_every_default_check_in_keeps_its_question_and_the_emergency_sentence(
    world: str, nudge: bool
) -> None:
    for step in DEFAULT_PLAN:
        context = {
            "check_in_id": 5,
            "question": step.question,
            "answers": [{"digit": a.digit, "label": a.label} for a in step.answers],
            "nudge": nudge,
            "answer_until": "2027-05-01T00:00:00+00:00",
        }
        body = render_sms(Row(kind="check_in", context=context), course(FIRST)[:1], **WORLDS[world])
        assert step.question in body, body
        assert "Reply 1, 2 or 3." in body
        assert "Trouble breathing or swelling of lips, tongue or throat: call" in body
        assert ("911" if world == "new-york" else "999") in body
        assert LONG_CLINIC in body and is_gsm7(body)
        assert TREATMENT_NAME.lower() not in body.lower()
        assert body.startswith("Reminder:") == nudge
        assert segment_count(body) <= 3, (len(body), body)
