"""What a name may not contain: characters that change how the text around it looks.

Names (patients', practitioners', clinics', treatments', tokens') are shown to staff in lists and
to patients in messages. A bidi override (U+202E) before "gnp.exe" makes it read "exe.png" and
can reorder what follows it on the screen; zero-width characters make two names that look
identical differ, so a duplicate passes unseen; control characters break lines in SMS, email
headers and logs. None of them is
part of anyone's name, so they are refused with a message rather than silently removed (which
would store something other than what was typed).
"""

from __future__ import annotations

import unicodedata

# Embeddings and overrides (U+202A-U+202E) and isolates (U+2066-U+2069).
BIDI_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))
# Zero-width space, non-joiner and joiner, word joiner, and the byte order mark.
ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff")
# The non-joiner and joiner are part of how some names are spelt (the Persian "Mirza" has a
# non-joiner after its second letter; many Indic scripts use both): between two letters of a
# script that is not Latin they are allowed. Between Latin letters, at an edge or beside a
# space they only hide a difference.
JOINERS = frozenset("\u200c\u200d")
# Line and paragraph separators: line breaks that are not category Cc.
LINE_SEPARATORS = frozenset("\u2028\u2029")

UNSAFE_NAME_RULE = "no control, zero-width or direction-changing (bidi) characters"


def unsafe_name_character(text: str) -> str | None:
    """Why `text` is refused as a name (naming the first bad character), or None if it is fine."""
    for index, ch in enumerate(text):
        code = f"U+{ord(ch):04X}"
        if ch in BIDI_CONTROLS:
            return f"must not contain direction-changing (bidi) characters (found {code})"
        if ch in JOINERS and _joins_letters(text, index):
            continue
        if ch in ZERO_WIDTH:
            return f"must not contain invisible zero-width characters (found {code})"
        if ch in LINE_SEPARATORS or unicodedata.category(ch) == "Cc":
            return f"must be one line of text without control characters (found {code})"
    return None


def _non_latin_letter(ch: str) -> bool:
    if not unicodedata.category(ch).startswith(("L", "M")):
        return False
    return not unicodedata.name(ch, "").startswith("LATIN")


def _joins_letters(text: str, index: int) -> bool:
    """Whether the joiner at `index` stands between two letters (or marks) of a non-Latin
    script, where it shapes the writing rather than hiding anything."""
    before = text[index - 1] if index > 0 else ""
    after = text[index + 1] if index + 1 < len(text) else ""
    return bool(before and after) and _non_latin_letter(before) and _non_latin_letter(after)


def storable_problem(text: str) -> str | None:
    """Why `text` cannot be stored as text (None: it can). PostgreSQL text cannot hold NUL, and
    lone surrogates (which a malformed form or JSON body can carry) cannot be encoded as UTF-8:
    both are refused where the text comes in, rather than fail in the database."""
    if "\x00" in text:
        return "must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text"
    return None


def one_line_problem(text: str) -> str | None:
    """Why `text` is not one storable line without control characters (None: it is)."""
    if any(ord(ch) < 32 or ord(ch) == 127 or ch in LINE_SEPARATORS for ch in text):
        return "must be one line of text without control characters"
    return storable_problem(text)


def check_name(text: str) -> str:
    """A pydantic AfterValidator: the name unchanged, or ValueError saying what is wrong."""
    problem = unsafe_name_character(text)
    if problem is not None:
        raise ValueError(problem)
    return text
