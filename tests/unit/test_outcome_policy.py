"""The notifier's outcome policy on its own: what a call's result, or a lost answer, does to the
row (services/notifier/outcomes.py)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.notifier import outcomes
from services.notifier.outcomes import Accepted, Refused, RetryRules
from shared.store.notifications.rows import Notification

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RULES = RetryRules(base=timedelta(seconds=30), max_attempts=5)


def _row(**changes: object) -> Notification:
    base = Notification(
        id=7,
        clinic_id=1,
        patient_id=3,
        appointment_id=None,
        kind="reply",
        channel="sms",
        recipient=None,
        template="reply",
        template_version=1,
        language="en",
        context={},
        appointment_version=None,
        due_at=NOW,
        expires_at=None,
        dedupe_key="k",
        status="sending",
        urgent=False,
        attempts=0,
        lease_until=None,
        leased_by="w",
        provider_id=None,
        segments=None,
        body_hash=None,
        status_reason=None,
        error_code=None,
        created_at=NOW,
        updated_at=NOW,
        sent_at=None,
        delivered_at=None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_an_accepted_call_is_sent_with_the_provider_id() -> None:
    outcome = outcomes.after_call(
        _row(), 11, Accepted("SM1", "accepted by Twilio (queued)", 2), now=NOW, rules=RULES
    )
    assert (outcome.status, outcome.provider_id, outcome.segments) == ("sent", "SM1", 2)
    assert outcome.attempt_outcome == "sent" and outcome.attempt_id == 11


def test_a_temporary_refusal_is_retried_later_with_a_growing_backoff() -> None:
    first = outcomes.after_call(
        _row(attempts=0), 1, Refused("temporary", "Twilio 500", 20500), now=NOW, rules=RULES
    )
    third = outcomes.after_call(
        _row(attempts=2), 1, Refused("temporary", "Twilio 500", 20500), now=NOW, rules=RULES
    )
    assert first.status == third.status == "scheduled"
    assert first.due_at is not None and third.due_at is not None
    # Full jitter in the upper half: attempt 1 waits 15–30 s, attempt 3 waits 60–120 s.
    assert timedelta(seconds=15) <= first.due_at - NOW <= timedelta(seconds=30)
    assert timedelta(seconds=60) <= third.due_at - NOW <= timedelta(seconds=120)
    assert "retry 2 later" in first.reason and first.error_code == 20500


def test_the_last_attempt_fails_with_the_last_error() -> None:
    outcome = outcomes.after_call(
        _row(attempts=4), 1, Refused("temporary", "SMTP 451: try later", 451), now=NOW, rules=RULES
    )
    assert outcome.status == "failed" and outcome.due_at is None
    assert outcome.reason == "gave up after 5 attempts: SMTP 451: try later"


def test_no_retry_is_planned_after_the_row_expires() -> None:
    row = _row(expires_at=NOW + timedelta(seconds=10))
    outcome = outcomes.after_call(row, 1, Refused("temporary", "Twilio 429"), now=NOW, rules=RULES)
    assert outcome.status == "failed"
    assert outcome.reason == "no retry before it expires: Twilio 429"


def test_a_permanent_refusal_fails_at_once() -> None:
    outcome = outcomes.after_call(
        _row(), 1, Refused("permanent", "Twilio 21211: invalid number", 21211), now=NOW, rules=RULES
    )
    assert (outcome.status, outcome.error_code, outcome.attempt_outcome) == (
        "failed",
        21211,
        "permanent",
    )


def test_a_lost_answer_is_unknown_never_retried_blindly() -> None:
    outcome = outcomes.after_call(
        _row(), 1, Refused("ambiguous", "cut off at shutdown"), now=NOW, rules=RULES
    )
    assert outcome.status == "unknown" and outcome.due_at is None
    assert outcome.reason == "outcome unknown, to be reconciled: cut off at shutdown"


@pytest.mark.parametrize("attempts", [1, 5, 12, 40])
def test_backoff_never_exceeds_an_hour(attempts: int) -> None:
    rng = random.Random(attempts)
    for _ in range(50):
        assert outcomes.backoff(attempts, timedelta(minutes=5), rng=rng) <= outcomes.MAX_BACKOFF


# -- reconciling ---------------------------------------------------------------------------------

STARTED = {"attempt_to": "+447700900123"}


def _lost(**changes: object) -> Notification:
    lost: dict[str, object] = {
        "status": "unknown",
        "context": STARTED,
        "body_hash": b"h",
        "attempts": 1,
    }
    return _row(**(lost | changes))


def test_an_sms_found_at_twilio_is_sent() -> None:
    decided = outcomes.reconcile_sms(
        _lost(),
        found=("SM9", 1),
        last_attempt_at=NOW,
        now=NOW,
        grace=timedelta(minutes=2),
        max_attempts=5,
    )
    assert decided == outcomes.FoundSent("SM9", 1, "reconciled: Twilio has it as SM9")


def test_an_sms_not_found_is_asked_about_again_until_the_grace_period_ends() -> None:
    early = outcomes.reconcile_sms(
        _lost(),
        found=None,
        last_attempt_at=NOW,
        now=NOW + timedelta(seconds=30),
        grace=timedelta(minutes=2),
        max_attempts=5,
    )
    late = outcomes.reconcile_sms(
        _lost(),
        found=None,
        last_attempt_at=NOW,
        now=NOW + timedelta(minutes=3),
        grace=timedelta(minutes=2),
        max_attempts=5,
    )
    assert isinstance(early, outcomes.AskLater)
    assert isinstance(late, outcomes.NotFound) and late.status == "scheduled"
    assert "Twilio has no such message 120 s after the attempt; sending again" in late.reason


def test_an_sms_not_found_past_its_use_or_its_attempts_is_not_sent_again() -> None:
    expired = outcomes.reconcile_sms(
        _lost(expires_at=NOW),
        found=None,
        last_attempt_at=NOW - timedelta(minutes=5),
        now=NOW + timedelta(minutes=1),
        grace=timedelta(minutes=2),
        max_attempts=5,
    )
    spent = outcomes.reconcile_sms(
        _lost(attempts=5),
        found=None,
        last_attempt_at=NOW - timedelta(minutes=5),
        now=NOW,
        grace=timedelta(minutes=2),
        max_attempts=5,
    )
    assert isinstance(expired, outcomes.NotFound) and expired.status == "expired"
    assert isinstance(spent, outcomes.NotFound) and spent.status == "failed"
    assert "gave up after 5 attempts" in spent.reason


def test_a_row_whose_call_never_started_is_sent_without_asking_twilio() -> None:
    decided = outcomes.reconcile_sms(
        _row(status="unknown"),
        found=None,
        last_attempt_at=None,
        now=NOW,
        grace=timedelta(minutes=2),
        max_attempts=5,
    )
    assert decided == outcomes.NotFound("scheduled", "no provider call was started: sending")


def test_an_unknown_email_is_sent_again_with_its_message_id_unless_expired() -> None:
    again = outcomes.reconcile_email(_lost(channel="email", context={"message_id": "<m@x>"}), NOW)
    late = outcomes.reconcile_email(_lost(channel="email", expires_at=NOW), NOW)
    assert again.status == "scheduled" and "<m@x>" in again.reason
    assert late.status == "expired"
