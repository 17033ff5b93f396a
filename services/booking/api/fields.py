"""The field types of the JSON API, one of each, so that a rule about what a field accepts lives
in one place and the OpenAPI schema says exactly that.

Rules every type keeps:

* Text is stripped of surrounding whitespace and must be storable: PostgreSQL text cannot hold
  NUL, and lone surrogates cannot be encoded as UTF-8, so both are refused here rather than fail
  in the database. Free text (`text`, `ShortText`, `LongText`, `Reason`) may span lines.
* Names (`Name`, `PersonName`) are one line without control, zero-width or direction-changing
  characters (shared.domain.names), and never blank.
* An instant (`Instant`) is an ISO 8601 date-time with its UTC offset, e.g.
  2026-03-10T09:00:00Z; it is read as the moment it names and kept in UTC. A bare number (Unix
  time), which pydantic alone would accept, is refused with a message saying so. A day (`Day`)
  is an ISO 8601 date, YYYY-MM-DD. Both lie between the years 2000 and 2999: anything outside
  is a typing mistake, and keeps date arithmetic far from overflowing.
* Ids are positive bigints (`Id`); a bigger number would overflow in the driver instead of
  answering 404 or 422.

Request models derive from `Body` (JSON bodies: unknown fields refused, types strict) or `Query`
(query strings: unknown parameters refused, text read as the field's type). This module
registers no routes.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from functools import cache
from typing import Annotated, Any
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)

from shared.domain.names import UNSAFE_NAME_RULE, check_name, one_line_problem, storable_problem

# -- Request models --------------------------------------------------------------------------------


class Body(BaseModel):
    """Request bodies refuse unknown fields, so a typo is a 422 instead of a silent no-op, and
    are strict: JSON has real numbers and booleans, so "5" or 0 standing for 5 or false is a
    client bug worth reporting rather than guessing at."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Query(BaseModel):
    """Query parameters refuse unknown names (`?limt=5` is a 422 naming `limt`, not a page of
    50); their values are text, read as each field's type says."""

    model_config = ConfigDict(extra="forbid")


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def optional(**constraints: Any) -> Any:
    """A field that may be left out but, when given, must be valid (null only if its type says
    so). PATCH bodies and query filters use it; `model_dump(exclude_unset=True)` then holds
    exactly what the client sent. The schema shows no `default: null`, which would be a lie."""
    return Field(default=None, json_schema_extra=_no_default, **constraints)


# -- Ids -------------------------------------------------------------------------------------------

MAX_ID = 2**63 - 1

Id = Annotated[int, Field(ge=1, le=MAX_ID)]

# -- Text ------------------------------------------------------------------------------------------

# No NUL anywhere (what the schema tells clients; `storable` enforces it with surrogates).
NO_NUL = r"^[^\x00]*$"
# At least one visible character, and no NUL anywhere.
NOT_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"


def storable(text: str) -> str:
    """An AfterValidator for text that the database can store (shared.domain.names)."""
    problem = storable_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


def one_line(text: str) -> str:
    """An AfterValidator: storable text on one line, without control characters."""
    problem = one_line_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


def text(max_length: int, *, min_length: int = 0, description: str | None = None) -> Any:
    """Free text of at most `max_length` characters after stripping surrounding whitespace (at
    least `min_length`); line breaks and tabs are fine, NUL is not."""
    return Annotated[
        str,
        StringConstraints(
            strip_whitespace=True,
            min_length=min_length or None,
            max_length=max_length,
            pattern=NO_NUL,
        ),
        AfterValidator(storable),
        Field(description=description),
    ]


ShortText = text(500)
LongText = text(4000)
# Why someone did something, for the audit log: never empty.
Reason = text(500, min_length=1)
# Why a safety rule (a course's hard minimum gap, the cancellation notice) is set aside: logged
# with the change, so it must say something.
OverrideReason = text(500, min_length=3, description="at least 3 characters; logged")


def _name(max_length: int) -> Any:
    return Annotated[
        str,
        StringConstraints(
            strip_whitespace=True, min_length=1, max_length=max_length, pattern=NOT_BLANK
        ),
        AfterValidator(storable),
        AfterValidator(check_name),
        Field(description=f"1 to {max_length} characters; {UNSAFE_NAME_RULE}"),
    ]


# A name typed into a request: a clinic, practitioner, treatment or token (the columns hold 200).
Name = _name(200)
# A patient's first or last name (the columns hold 100).
PersonName = _name(100)
# A name as stored: what reads return, including names saved before `Name`'s character rule.
StoredName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NOT_BLANK)]

# A mobile number or email address as someone typed it: normalised by the clinic's rules
# (shared.domain.contact) before it is stored, which names what is wrong with it.
Contact = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=254), AfterValidator(one_line)
]
Phone = Annotated[
    str,
    StringConstraints(pattern=r"^\+[1-9][0-9]{6,14}$"),
    Field(description="E.164, e.g. +442079460000", examples=["+442079460000"]),
]


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _known_zone(name: str) -> str:
    if name not in _zones():
        raise ValueError("is not an IANA time zone, e.g. Europe/London")
    return name


TimeZone = Annotated[
    str,
    StringConstraints(max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"),
    AfterValidator(_known_zone),
    Field(description="IANA time zone", examples=["Europe/London"]),
]

# -- Times and dates -------------------------------------------------------------------------------

EARLIEST_YEAR = 2000
LATEST_YEAR = 2999
INSTANT_EXAMPLE = "2026-03-10T09:00:00Z"

_ISO_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NUMBER = re.compile(r"\s*[+-]?\d+(\.\d*)?\s*")
_LAX_DATETIME = TypeAdapter(datetime)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return bool(_NUMBER.fullmatch(value))
    return isinstance(value, int | float)


def _in_years(year: int) -> None:
    if not EARLIEST_YEAR <= year <= LATEST_YEAR:
        raise ValueError(f"must be between the years {EARLIEST_YEAR} and {LATEST_YEAR}")


def _instant(value: Any) -> datetime:
    if _is_number(value):
        raise ValueError(
            "a number is not an instant here (no Unix time): use an ISO 8601 date-time with its "
            f"offset, e.g. {INSTANT_EXAMPLE}"
        )
    if isinstance(value, datetime):
        moment = value  # a default, or a value read back
    elif isinstance(value, str) and _ISO_DATETIME.match(value):
        try:
            moment = _LAX_DATETIME.validate_python(value)
        except ValidationError:
            raise ValueError("is not a valid date-time") from None
    else:
        raise ValueError(f"use an ISO 8601 date-time with its offset, e.g. {INSTANT_EXAMPLE}")
    if moment.utcoffset() is None:
        raise ValueError(f"needs its UTC offset (Z or e.g. +01:00), e.g. {INSTANT_EXAMPLE}")
    try:
        in_utc = moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"must be between the years {EARLIEST_YEAR} and {LATEST_YEAR}") from None
    _in_years(in_utc.year)
    return in_utc


Instant = Annotated[
    AwareDatetime,
    BeforeValidator(_instant),
    Field(description=f"ISO 8601 with its UTC offset, e.g. {INSTANT_EXAMPLE}"),
]


def _iso_date(value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value  # a default, or a value read back
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError("is not a valid date") from None
    raise ValueError("use an ISO 8601 date, YYYY-MM-DD, e.g. 2026-03-10")


def _day(value: Any) -> date:
    day = _iso_date(value)
    _in_years(day.year)
    return day


Day = Annotated[date, BeforeValidator(_day)]

EARLIEST_BIRTH_YEAR = 1900


def _birth_date(value: Any) -> date:
    day = _iso_date(value)
    if day.year < EARLIEST_BIRTH_YEAR:
        raise ValueError(f"must be in {EARLIEST_BIRTH_YEAR} or later; check the year")
    return day


# A date of birth: an ISO 8601 date like any day, from 1900 on (whether it lies in the future is
# a question of the clinic's today, which the endpoint checks).
BirthDate = Annotated[date, BeforeValidator(_birth_date)]

_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


def _parse_local_time(value: Any) -> time:
    if isinstance(value, time) and value.tzinfo is None:
        return value  # read back from the database
    if isinstance(value, str) and re.fullmatch(_HHMM, value):
        return time.fromisoformat(value)
    raise ValueError("use a 24-hour local time HH:MM, e.g. 09:30")


LocalTime = Annotated[
    time,
    PlainValidator(_parse_local_time),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": _HHMM, "examples": ["09:30"]}),
]
