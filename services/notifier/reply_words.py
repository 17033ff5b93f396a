"""What a patient's SMS says, read as the keywords of ../shared/contract.md: pure functions.

Matching ignores case, surrounding spaces and punctuation (" Yes! " is YES); a keyword counts
only as the whole message (a sentence that contains "stop" is free text for a person to read),
except that Twilio's own `OptOutType` field, when present, is taken as its word for it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

Intent = Literal[
    "confirm", "reschedule", "cancel_session", "opt_out", "opt_in", "help", "digit", "text"
]

CONFIRM_WORDS = frozenset({"C", "Y", "YES", "CONFIRM"})
RESCHEDULE_WORDS = frozenset({"R", "RESCHEDULE"})
CANCEL_SESSION_WORDS = frozenset({"X"})
OPT_OUT_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
OPT_IN_WORDS = frozenset({"START", "UNSTOP"})
# YES also opts back in, but only from a number that has opted out (else it confirms).
OPT_IN_WHEN_OPTED_OUT = frozenset({"YES"})
HELP_WORDS = frozenset({"HELP", "INFO"})

_TWILIO_OPT_OUT_TYPES: dict[str, Intent] = {"STOP": "opt_out", "START": "opt_in", "HELP": "help"}

# Everything that is not a letter or a digit is punctuation or space here ("C.", "yes!!",
# "'X'", "opt-out" -> "OPTOUT").
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Reading:
    intent: Intent
    keyword: str  # the normalised message ("YES"), empty for free text
    digit: int | None = None


def normalise(body: str) -> str:
    """The message as a keyword: upper case, accents and punctuation and spaces removed."""
    folded = unicodedata.normalize("NFKD", body)
    letters = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return _NOT_WORD.sub("", letters).upper()


def read(body: str, *, opt_out_type: str | None, opted_out: bool) -> Reading:
    """What the message asks for. `opted_out`: the number has opted out of SMS (YES then opts
    back in instead of confirming)."""
    word = normalise(body)
    if opt_out_type and opt_out_type.upper() in _TWILIO_OPT_OUT_TYPES:
        return Reading(_TWILIO_OPT_OUT_TYPES[opt_out_type.upper()], word)
    if word in OPT_OUT_WORDS:
        return Reading("opt_out", word)
    if word in OPT_IN_WORDS or (opted_out and word in OPT_IN_WHEN_OPTED_OUT):
        return Reading("opt_in", word)
    if word in HELP_WORDS:
        return Reading("help", word)
    if word in CONFIRM_WORDS:
        return Reading("confirm", word)
    if word in RESCHEDULE_WORDS:
        return Reading("reschedule", word)
    if word in CANCEL_SESSION_WORDS:
        return Reading("cancel_session", word)
    if word.isdigit() and len(word) <= 2 and body.strip().strip(".!").strip().isdigit():
        return Reading("digit", word, int(word))
    return Reading("text", "")
