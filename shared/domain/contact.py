"""Normalising what patients type: mobile numbers to E.164 (phonenumbers, with the clinic's
region as default) and email addresses (email-validator, without a DNS lookup)."""

from __future__ import annotations

import phonenumbers
from email_validator import EmailNotValidError, validate_email


class ContactError(ValueError):
    """The value is not usable; the message is written for the patient."""


def normalise_mobile(raw: str, region: str) -> str:
    text = raw.strip()
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise ContactError("enter a mobile number, e.g. 07911 123456 or +44 7911 123456") from None
    if not phonenumbers.is_valid_number(number):
        raise ContactError("this is not a valid phone number")
    kind = phonenumbers.number_type(number)
    if kind not in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        raise ContactError("this looks like a landline; we need a mobile number for texts")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(raw: str) -> str:
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise ContactError(str(error)) from None
