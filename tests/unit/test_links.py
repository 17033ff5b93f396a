"""Self-service links: they round-trip, expire, and refuse any tampering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.links import LinkError, patient_from_link, patient_link_token, sign, verify

SECRET = "k" * 40
NOW = datetime(2026, 3, 2, 9, tzinfo=UTC)


def test_round_trip_and_short_enough_for_an_sms() -> None:
    token = patient_link_token(SECRET, 4242, now=NOW)
    assert len(token) <= 32
    assert patient_from_link(SECRET, token, now=NOW + timedelta(days=30)) == 4242


def test_expired_link_is_refused_with_a_message_for_the_patient() -> None:
    token = patient_link_token(SECRET, 7, now=NOW, lifetime=timedelta(days=1))
    with pytest.raises(LinkError, match="expired"):
        patient_from_link(SECRET, token, now=NOW + timedelta(days=1, minutes=1))


@pytest.mark.parametrize("position", [0, 5, 11, 12, 20])
def test_any_changed_character_is_refused(position: int) -> None:
    token = patient_link_token(SECRET, 7, now=NOW)
    flipped = token[:position] + ("A" if token[position] != "A" else "B") + token[position + 1 :]
    with pytest.raises(LinkError, match="not valid"):
        patient_from_link(SECRET, flipped, now=NOW)


def test_other_secret_or_purpose_is_refused() -> None:
    token = sign(SECRET, "patient-link", 7, NOW + timedelta(days=1))
    with pytest.raises(LinkError):
        verify("x" * 40, "patient-link", token, now=NOW)
    with pytest.raises(LinkError):
        verify(SECRET, "csrf", token, now=NOW)
    with pytest.raises(LinkError):
        verify(SECRET, "patient-link", "not base64 !!", now=NOW)
