"""The clinic's number in a message, as the reader would dial it."""

from __future__ import annotations

from shared.messaging.formats import display_phone


def test_a_reader_in_the_clinics_country_sees_the_national_form() -> None:
    assert display_phone("+442079460000", "GB", "+447700900123") == "020 7946 0000"
    assert display_phone("020 7946 0000", "GB", None) == "020 7946 0000"


def test_a_reader_abroad_sees_the_international_form() -> None:
    assert display_phone("+442079460000", "GB", "+33612345678") == "+44 20 7946 0000"
    assert display_phone("+12125550123", "US", "+447700900123") == "+1 212-555-0123"
    assert display_phone("+12125550123", "US", "+14155550123") == "(212) 555-0123"


def test_a_number_that_cannot_be_read_is_shown_as_typed() -> None:
    assert display_phone("call reception", "GB", "+447700900123") == "call reception"
