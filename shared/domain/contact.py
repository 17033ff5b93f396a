"""Normalising what patients type: mobile numbers to E.164 (phonenumbers, with the clinic's
region as default) and email addresses (email-validator, without a DNS lookup).

A clinic texts only the countries it chose (clinic.sms_countries, by default its own region):
`normalise_mobile` refuses a mobile from anywhere else wherever one is typed, so that nobody can
fill forms with premium or far-away numbers and run up the clinic's SMS bill ("SMS pumping").
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import geocoder


class ContactError(ValueError):
    """The value is not usable; the message is written for the patient."""


class CountryNotTexted(ContactError):
    """A real mobile number, but from a country the clinic does not send SMS to."""

    def __init__(self, country: str, allowed: Collection[str]) -> None:
        super().__init__(
            f"we can only text mobile numbers from {describe_countries(allowed)}; "
            f"this number is from {country_name(country)}"
        )
        self.country = country
        self.allowed = tuple(allowed)


def country_name(region: str) -> str:
    """'United Kingdom' for 'GB' (phonenumbers' own English names); the code if it has none."""
    example = phonenumbers.example_number(region)
    name = geocoder.country_name_for_number(example, "en") if example is not None else ""
    return name or region


def describe_countries(regions: Iterable[str]) -> str:
    """'United Kingdom (+44) or Ireland (+353)': names with calling codes, as a patient reads
    them beside a refused number."""
    parts = [
        f"{country_name(r)} (+{phonenumbers.country_code_for_region(r)})"
        if phonenumbers.country_code_for_region(r)
        else country_name(r)
        for r in regions
    ]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def is_sms_country(region: str) -> bool:
    """Whether phonenumbers knows `region` as a country with phone numbers of its own."""
    return region in phonenumbers.SUPPORTED_REGIONS


def normalise_mobile(raw: str, region: str, *, countries: Collection[str] | None = None) -> str:
    """The mobile in E.164, read with `region` as the default country; with `countries`, a
    number from any other country is refused (CountryNotTexted)."""
    text = raw.strip()
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise ContactError("enter a mobile number, e.g. 07911 123456 or +44 7911 123456") from None
    if not phonenumbers.is_valid_number(number):
        raise ContactError("this is not a valid phone number")
    if countries is not None:
        country = phonenumbers.region_code_for_number(number) or ""
        if country not in countries:
            raise CountryNotTexted(country, countries)
    kind = phonenumbers.number_type(number)
    if kind not in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        raise ContactError("this looks like a landline; we need a mobile number for texts")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@functools.lru_cache(maxsize=65536)  # the notifier asks for every SMS; parsing is the cost
def may_text(e164: str, countries: tuple[str, ...]) -> bool:
    """Whether a stored E.164 number is one of `countries`'. A number phonenumbers cannot place
    in a country (a test or newly opened range) counts by its calling code: +44 is one of
    GB, GG, JE and IM, so a clinic texting any of them may text it."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return False
    country = phonenumbers.region_code_for_number(number)
    if country:
        return country in countries
    sharing = phonenumbers.region_codes_for_country_code(number.country_code or 0)
    return any(region in countries for region in sharing)


def normalise_email(raw: str) -> str:
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise ContactError(str(error)) from None
