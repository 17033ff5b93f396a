"""How messages write dates, times and the clinic's phone number for their reader: the reader's
language and the clinic's country decide the style (day-month or month-day, 24 or 12 hours), the
reader's zone the local time (named only when it is not the clinic's), and the reader's own number
whether the clinic's is shown in national or international form. GSM-7 look-alikes keep an SMS in
its cheaper alphabet."""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from zoneinfo import ZoneInfo

import phonenumbers

from shared.sms_segments import GSM7_BASIC, GSM7_EXTENDED, is_gsm7
from shared.store.appointments import Appointment

DEFAULT_LANGUAGE = "en"


@dataclass(frozen=True)
class DateStyle:
    days: tuple[str, ...]
    day_names: tuple[str, ...]
    months: tuple[str, ...]
    month_names: tuple[str, ...]
    month_first: bool = False
    twelve_hour: bool = False


_EN = DateStyle(
    days=("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
    day_names=("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    months=("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    month_names=(
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ),
)
# Keyed by language, or language-REGION (the clinic's region) where the convention differs.
DATE_STYLES: dict[str, DateStyle] = {
    "en": _EN,
    "en-US": replace(_EN, month_first=True, twelve_hour=True),
}


def date_style(language: str, region: str) -> DateStyle:
    return (
        DATE_STYLES.get(f"{language}-{region}")
        or DATE_STYLES.get(language)
        or DATE_STYLES[DEFAULT_LANGUAGE]
    )


@dataclass(frozen=True)
class SessionView:
    """One appointment as the patient reads it, in their zone."""

    id: int
    local: datetime
    short: str  # Tue 3 Mar 10:00
    long: str  # Tuesday 3 March 2026 at 10:00
    day: str  # Tue 3 Mar
    time: str  # 10:00
    ends: str  # 10:30


def clock_text(moment: datetime, style: DateStyle) -> str:
    if not style.twelve_hour:
        return f"{moment:%H:%M}"
    hour = moment.hour % 12 or 12
    return f"{hour}:{moment:%M} {'AM' if moment.hour < 12 else 'PM'}"


def day_text(moment: datetime, style: DateStyle) -> str:
    dow, month = style.days[moment.weekday()], style.months[moment.month - 1]
    return f"{dow} {month} {moment.day}" if style.month_first else f"{dow} {moment.day} {month}"


def long_day_text(moment: datetime, style: DateStyle) -> str:
    dow = style.day_names[moment.weekday()]
    month = style.month_names[moment.month - 1]
    if style.month_first:
        return f"{dow}, {month} {moment.day}, {moment.year}"
    return f"{dow} {moment.day} {month} {moment.year}"


def local_view(
    view_id: int,
    starts: datetime,
    ends: datetime | None,
    zone: ZoneInfo,
    style: DateStyle,
    show_zone: bool,
) -> SessionView:
    local = starts.astimezone(zone)
    # The zone is named only when the reader's zone is not the clinic's: "10:00 EST".
    suffix = f" {local.tzname()}" if show_zone else ""
    clock = clock_text(local, style) + suffix
    day = day_text(local, style)
    return SessionView(
        id=view_id,
        local=local,
        short=f"{day} {clock}",
        long=f"{long_day_text(local, style)} at {clock}",
        day=day,
        time=clock,
        ends="" if ends is None else clock_text(ends.astimezone(zone), style) + suffix,
    )


def session_view(
    appointment: Appointment, zone: ZoneInfo, style: DateStyle, *, show_zone: bool
) -> SessionView:
    return local_view(
        appointment.id, appointment.starts_at, appointment.ends_at, zone, style, show_zone
    )


def grouped_dates(views: Sequence[SessionView], style: DateStyle) -> str:
    """Several sessions in few characters: '3, 10, 17 Mar; 7 Apr at 10:00' when they share a
    time, else each date and time without the weekday."""
    if not views:
        return ""
    if len({v.time for v in views}) == 1:
        months: list[tuple[tuple[int, int], list[int]]] = []
        for v in views:
            key = (v.local.year, v.local.month)
            if months and months[-1][0] == key:
                months[-1][1].append(v.local.day)
            else:
                months.append((key, [v.local.day]))
        parts = []
        for (_, month), days in months:
            numbers = ", ".join(str(d) for d in days)
            name = style.months[month - 1]
            parts.append(f"{name} {numbers}" if style.month_first else f"{numbers} {name}")
        return f"{'; '.join(parts)} at {views[0].time}"
    items = []
    for v in views:
        month_name = style.months[v.local.month - 1]
        day = f"{month_name} {v.local.day}" if style.month_first else f"{v.local.day} {month_name}"
        items.append(f"{day} {v.time}")
    return ", ".join(items)


def display_phone(phone: str, region: str, reader_number: str | None) -> str:
    """The clinic's number as the reader dials it: national format when the reader's mobile has
    the clinic's country code (or is unknown), international otherwise."""
    country_code = _country_code(phone, region)
    if country_code is None:
        return phone
    national = True
    if reader_number:
        if reader_number.startswith("+"):
            # Stored mobiles are E.164, and country calling codes are prefix-free: the reader is
            # in the clinic's country exactly when the number starts with its code.
            national = reader_number.startswith(f"+{country_code}")
        else:
            try:
                national = phonenumbers.parse(reader_number, None).country_code == country_code
            except phonenumbers.NumberParseException:
                national = True
    return _formatted(phone, region, national)


# A clinic's number is formatted for every message it sends: parsed and formatted once per form.
@functools.lru_cache(maxsize=1024)
def _country_code(phone: str, region: str) -> int | None:
    try:
        code = phonenumbers.parse(phone, region).country_code
    except phonenumbers.NumberParseException:
        return None
    return None if code is None else int(code)


@functools.lru_cache(maxsize=2048)
def _formatted(phone: str, region: str, national: bool) -> str:
    form = (
        phonenumbers.PhoneNumberFormat.NATIONAL
        if national
        else phonenumbers.PhoneNumberFormat.INTERNATIONAL
    )
    return phonenumbers.format_number(phonenumbers.parse(phone, region), form)


# -- GSM-7 -----------------------------------------------------------------------------------------

_GSM7_LOOKALIKES = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u2032": "'",
    "\u00b4": "'",
    "`": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u2033": '"',
    "\u2013": "-",
    "\u2014": "-",
    "\u2212": "-",
    "\u2010": "-",
    "\u2011": "-",
    "\u2026": "...",
    "\u00a0": " ",
    "\u2009": " ",
    "\u202f": " ",
    "\u2022": "-",
    "\u0141": "L",
    "\u0142": "l",
    "\u0110": "D",
    "\u0111": "d",
    "\u0152": "OE",
    "\u0153": "oe",
    "\u00e7": "c",
    "\u00f0": "d",
    "\u00fe": "th",
}


def _gsm7_char(ch: str) -> str:
    if ch in GSM7_BASIC or ch in GSM7_EXTENDED:
        return ch
    if ch in _GSM7_LOOKALIKES:
        return _GSM7_LOOKALIKES[ch]
    base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
    return base if base and is_gsm7(base) else ch


def gsm7_fallback(body: str) -> str:
    """The body with typographic quotes, dashes and accents GSM-7 lacks ('Zoë', 'St John’s')
    replaced by look-alikes, if that makes it all GSM-7 (a UCS-2 SMS holds 70 characters, not
    160); otherwise unchanged, since a name in another script cannot be spelt in GSM-7."""
    if is_gsm7(body):
        return body
    replaced = "".join(_gsm7_char(ch) for ch in body)
    return replaced if is_gsm7(replaced) else body
