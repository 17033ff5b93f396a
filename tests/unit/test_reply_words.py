"""Reading patients' SMS replies as the contract's keywords, and spotting danger words."""

from __future__ import annotations

import pytest
from phonenumbers import shortnumberinfo

from services.notifier.reply_words import read
from shared.domain.danger_words import danger_signs
from shared.domain.emergency import EMERGENCY_NUMBERS, emergency_number


@pytest.mark.parametrize("body", ["c", "C", " Yes! ", "yes", "CONFIRM", "Confirm.", "y", "'C'"])
def test_confirm_words_in_any_case_and_punctuation(body: str) -> None:
    assert read(body, opt_out_type=None, opted_out=False).intent == "confirm"


@pytest.mark.parametrize(
    "body",
    [
        "STOP",
        "stop",
        "Stop.",
        "STOPALL",
        "unsubscribe",
        "CANCEL",
        "end",
        "QUIT",
        "revoke",
        "OPTOUT",
        "opt-out",
        "Opt out",
    ],
)
def test_opt_out_words(body: str) -> None:
    assert read(body, opt_out_type=None, opted_out=False).intent == "opt_out"


def test_cancel_is_an_opt_out_not_a_cancellation() -> None:
    assert read("CANCEL", opt_out_type=None, opted_out=False).intent == "opt_out"
    assert read("x", opt_out_type=None, opted_out=False).intent == "cancel_session"


def test_yes_opts_back_in_only_from_an_opted_out_number() -> None:
    assert read("YES", opt_out_type=None, opted_out=True).intent == "opt_in"
    assert read("YES", opt_out_type=None, opted_out=False).intent == "confirm"
    assert read("start", opt_out_type=None, opted_out=False).intent == "opt_in"
    assert read("UNSTOP", opt_out_type=None, opted_out=True).intent == "opt_in"


def test_twilio_opt_out_type_is_taken_as_its_word() -> None:
    # Twilio's Advanced Opt-Out may have its own words (configured in its console).
    assert read("ARRET", opt_out_type="STOP", opted_out=False).intent == "opt_out"
    assert read("whatever", opt_out_type="START", opted_out=True).intent == "opt_in"
    assert read("aide", opt_out_type="HELP", opted_out=False).intent == "help"


def test_help_reschedule_digit_and_free_text() -> None:
    assert read("help", opt_out_type=None, opted_out=False).intent == "help"
    assert read("INFO?", opt_out_type=None, opted_out=False).intent == "help"
    assert read("r", opt_out_type=None, opted_out=False).intent == "reschedule"
    assert read("Reschedule please", opt_out_type=None, opted_out=False).intent == "text"
    assert read(" 2 ", opt_out_type=None, opted_out=False).digit == 2
    assert read("please stop sending these", opt_out_type=None, opted_out=False).intent == "text"
    assert read("", opt_out_type=None, opted_out=False).intent == "text"


@pytest.mark.parametrize(
    ("text", "sign"),
    [
        ("my lips are swelling", "swelling of lips, tongue or face"),
        ("Face is really swollen!!", "swelling of lips, tongue or face"),
        ("I can't breathe properly", "breathing"),
        ("my throat feels tight", "throat"),
        ("I fainted after the session", "fainting"),
        ("got hives on my arms", "hives"),
        ("I have a fever since last night", "fever"),
        ("there is pus where you injected", "pus"),
        ("the redness is spreading", "spreading redness"),
        ("severe pain in my scalp", "severe pain"),
    ],
)
def test_danger_words(text: str, sign: str) -> None:
    assert sign in danger_signs(text)


@pytest.mark.parametrize(
    "text", ["C", "see you on Tuesday", "can I move my appointment", "thanks, all fine", "Yes!"]
)
def test_ordinary_messages_are_not_danger(text: str) -> None:
    assert danger_signs(text) == []


def test_a_language_without_a_list_is_read_with_the_english_one() -> None:
    assert danger_signs("my lips are swelling", "pt-BR") == ["swelling of lips, tongue or face"]


@pytest.mark.parametrize("region", sorted(EMERGENCY_NUMBERS))
def test_each_emergency_number_is_one_in_its_region(region: str) -> None:
    number = emergency_number(region)
    assert shortnumberinfo.is_emergency_number(number, region), (region, number)


def test_an_unknown_region_gets_112() -> None:
    assert emergency_number("ZZ") == "112"
