"""Addresses out of providers' error texts.

Twilio and SMTP servers quote the recipient in their errors ("The 'To' number +44 7911 123456 is
not a valid phone number", "550 5.1.1 <ada@example.com>: Recipient address rejected"). Those texts
become a message's status reason and history, and the history (`notification_event`) is
append-only: erasing the patient could not take the address out again. So the text is cleaned
where it leaves the provider client, before anything stores or logs it.
"""

from __future__ import annotations

import re

# An email address, with or without angle brackets around it.
_EMAIL = re.compile(r"<?[^\s<>@'\"]+@[^\s<>@'\"]+\.[^\s<>@'\",;:]+>?")
# A phone number: an optional +, then at least 7 digits, spaces, dots, dashes or brackets
# between them allowed. Error codes (21211, 550, 5.1.1) are too short to match; an ISO date is
# left alone, and a match never starts inside a longer word or number.
_PHONE = re.compile(r"(?<![\w+.-])(?!\d{4}-\d{2}-\d{2})\+?\(?\d[\d\s().-]{5,}\d")

REDACTED = "[address]"


def without_addresses(text: str) -> str:
    """`text` with every email address and phone number replaced by "[address]"."""
    return _PHONE.sub(_phone_or_keep, _EMAIL.sub(REDACTED, text))


def _phone_or_keep(match: re.Match[str]) -> str:
    digits = sum(ch.isdigit() for ch in match.group(0))
    return REDACTED if digits >= 7 else match.group(0)
