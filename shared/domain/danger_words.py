"""Words in a patient's message that signal danger after a treatment (clinical-defaults.md:
the emergency tier, and the urgent signs of infection), one list per language, English first.

A match makes the message urgent and earns the emergency answer at once; it never decides
anything clinical by itself, so the lists err on the side of matching (a false alarm costs a
nurse a minute; a missed one can cost far more). Each pattern is named for what staff read in
the inbox ("swelling of lips, tongue or face").
"""

from __future__ import annotations

import re
import unicodedata

_SWELLING = r"(swell\w*|swollen|puff\w*)"
_PARTS = r"(lips?|tongue|face|mouth|eyes?|eyelids?)"

DANGER_PATTERNS: dict[str, list[tuple[str, re.Pattern[str]]]] = {
    "en": [
        (
            "breathing",
            re.compile(r"\b(breath\w*|wheez\w*|chok\w*)\b"),
        ),
        ("throat", re.compile(r"\bthroat\b")),
        (
            "swelling of lips, tongue or face",
            re.compile(rf"\b{_SWELLING}\b.*\b{_PARTS}\b|\b{_PARTS}\b.*\b{_SWELLING}\b", re.DOTALL),
        ),
        (
            "fainting",
            re.compile(r"\b(faint\w*|passed out|pass(ing)? out|blacked out|collaps\w*)\b"),
        ),
        ("hives", re.compile(r"\b(hives|welts|rash all over)\b")),
        ("fever", re.compile(r"\b(fever\w*|high temperature|temperature of 3[89])\b")),
        ("pus", re.compile(r"\b(pus|oozing|discharge)\b")),
        (
            "spreading redness",
            re.compile(r"\b(spreading\W+red\w*|red\w*\W+(is\W+)?spreading|red streaks?)\b"),
        ),
        (
            "severe pain",
            re.compile(
                r"\b((severe|terrible|unbearable|excruciating|worst|awful|extreme)\W+pain\w*"
                r"|pain\w*\W+(is\W+)?(severe|unbearable|getting worse|worse))\b"
            ),
        ),
    ],
}


def _plain(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in folded if not unicodedata.combining(ch)).lower()


def danger_signs(text: str, language: str = "en") -> list[str]:
    """The danger signs the text names, in the list's order (empty when none). A language
    without a list of its own is read with the English one as well."""
    plain = _plain(text)
    lists = [DANGER_PATTERNS.get(language.split("-", 1)[0].lower(), [])]
    if lists[0] is not DANGER_PATTERNS["en"]:
        lists.append(DANGER_PATTERNS["en"])
    found: list[str] = []
    for patterns in lists:
        for name, pattern in patterns:
            if name not in found and pattern.search(plain):
                found.append(name)
    return found
