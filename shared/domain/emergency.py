"""The emergency number of a clinic's country, for answers that tell a patient to call it.

A small table rather than a guess: each entry is checked against libphonenumber's short-number
data by tests/unit/test_danger_words.py. 112 reaches the emergency services from any GSM mobile
in most of the world, so it is the answer for a region the table lacks.
"""

from __future__ import annotations

EMERGENCY_NUMBERS: dict[str, str] = {
    "GB": "999",
    "IE": "112",
    "US": "911",
    "CA": "911",
    "MX": "911",
    "AU": "000",
    "NZ": "111",
    "IN": "112",
    "ZA": "112",
    "BR": "192",
    "AE": "999",
}
FALLBACK = "112"


def emergency_number(region: str) -> str:
    return EMERGENCY_NUMBERS.get(region.upper(), FALLBACK)
