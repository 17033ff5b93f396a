"""Self-service links: they round-trip, expire, are revoked by a new version, and refuse any
tampering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.links import (
    DEFAULT_LIFETIME,
    LinkExpired,
    LinkInvalid,
    LinkRevoked,
    open_patient_link,
    patient_link_token,
    patient_link_url,
    read_patient_link,
    sign,
    verify,
)

SECRET = "k" * 40
NOW = datetime(2026, 3, 2, 9, tzinfo=UTC)


def test_round_trip_and_short_enough_for_an_sms() -> None:
    token = patient_link_token(SECRET, 4242, 3, now=NOW)
    assert len(token) <= 24
    link = open_patient_link(SECRET, token, now=NOW + timedelta(days=29), current_version=3)
    assert (link.patient_id, link.version) == (4242, 3)
    # A whole URL at a typical clinic domain leaves most of an SMS segment for the words.
    assert len(patient_link_url("https://book.example-clinic.co.uk", token)) <= 60


def test_large_ids_and_versions_still_round_trip() -> None:
    token = patient_link_token(SECRET, 2**63 - 1, 10_000, now=NOW)
    link = read_patient_link(SECRET, token)
    assert (link.patient_id, link.version) == (2**63 - 1, 10_000)


def test_the_default_lifetime_is_a_month_not_a_season() -> None:
    assert DEFAULT_LIFETIME <= timedelta(days=31)
    token = patient_link_token(SECRET, 7, 1, now=NOW)
    with pytest.raises(LinkExpired):
        open_patient_link(SECRET, token, now=NOW + DEFAULT_LIFETIME + timedelta(hours=1))


def test_expired_link_is_refused_but_still_says_whose_it_was() -> None:
    token = patient_link_token(SECRET, 7, 1, now=NOW, lifetime=timedelta(days=1))
    with pytest.raises(LinkExpired) as refused:
        open_patient_link(SECRET, token, now=NOW + timedelta(days=1, minutes=1))
    assert refused.value.link.patient_id == 7


def test_a_link_of_an_older_version_is_revoked_even_before_it_expires() -> None:
    token = patient_link_token(SECRET, 7, 1, now=NOW)
    with pytest.raises(LinkRevoked):
        open_patient_link(SECRET, token, now=NOW, current_version=2)


@pytest.mark.parametrize("position", [0, 3, 5, 11, 12, 20, -1])
def test_any_changed_character_is_refused(position: int) -> None:
    token = patient_link_token(SECRET, 7, 1, now=NOW)
    position %= len(token)
    flipped = token[:position] + ("A" if token[position] != "A" else "B") + token[position + 1 :]
    with pytest.raises(LinkInvalid):
        open_patient_link(SECRET, flipped, now=NOW)


@pytest.mark.parametrize("token", ["", "A", "not base64 !!", "é" * 24, "A" * 400, "=" * 30])
def test_garbage_is_refused_as_invalid(token: str) -> None:
    with pytest.raises(LinkInvalid):
        open_patient_link(SECRET, token, now=NOW)


def test_other_secret_or_purpose_is_refused() -> None:
    token = sign(SECRET, "patient-link", (7, 1), NOW + timedelta(days=1))
    with pytest.raises(LinkInvalid):
        verify("x" * 40, "patient-link", token, 2)
    with pytest.raises(LinkInvalid):
        verify(SECRET, "csrf", token, 2)
    with pytest.raises(LinkInvalid):
        verify(SECRET, "patient-link", token, 3)  # a token of another shape
