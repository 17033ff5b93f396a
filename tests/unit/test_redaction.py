"""Providers' error texts lose the addresses they quote before anything stores them."""

from __future__ import annotations

import pytest

from shared.providers.redaction import without_addresses


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("The 'To' number +447911123456 is not a valid phone number.", "The 'To' number"),
        ("550 5.1.1 <ada@example.com>: Recipient address rejected", "550 5.1.1"),
        ("number +44 (0) 7911-123 456 unreachable", "unreachable"),
        ("mailbox ada.lovelace+x@mail.example.co.uk unknown", "mailbox"),
        ("sent to 07911 123456.", "sent to"),
    ],
)
def test_numbers_and_email_addresses_are_replaced(text: str, kept: str) -> None:
    cleaned = without_addresses(text)
    assert "[address]" in cleaned and kept in cleaned
    assert "7911" not in cleaned and "@" not in cleaned


@pytest.mark.parametrize(
    "text",
    [
        "SMTP 451 4.3.0 try again later",
        "Twilio 21610: Attempt to send to unsubscribed recipient",
        "Twilio 20429: Too Many Requests at 2026-03-02 09:00",
    ],
)
def test_codes_and_dates_stay_as_they_are(text: str) -> None:
    assert without_addresses(text) == text
