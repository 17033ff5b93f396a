"""What counts as "the database is away" (restarting, failed over, unreachable, a backend killed):
the one place that decides it, for the HTTP answers (503 with Retry-After instead of a 500, in
shared/web.py for the API and in the booking pages), the sweeps and the logs (one line naming
the error, no traceback: an outage is an operator's event, not a bug).

A restart of PostgreSQL shows up in the client as one of: the socket refused or gone
(ConnectionRefusedError, FileNotFoundError for a Unix socket, ConnectionResetError: OSError), a
server that is shutting down or starting up (57P01 admin shutdown, 57P02 crash shutdown, 57P03
cannot connect now), a connection that died under a query (ConnectionDoesNotExistError, an
InterfaceError "connection is closed"), class 08 (connection exception), 53300 too many
connections, asyncpg's InternalClientError on a connection the server closed while it sat idle
in the pool, or a connect or pool acquire that timed out.
"""

from __future__ import annotations

import os

import asyncpg

_ASYNCPG_DIR = os.path.dirname(asyncpg.__file__) + os.sep

# Every exception asyncpg raises for a connect or a statement: what code that must survive the
# database going away (the notifier's loops, its outcome writer) catches and retries.
CLIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

# Seconds a client is told to wait before trying again while the database is away.
RETRY_AFTER_SECONDS = 5

_UNAVAILABLE_SQLSTATES = ("57P01", "57P02", "57P03", "53300")
_CLOSED_MESSAGES = ("connection is closed", "connection was closed", "pool is closing")


def _is_unavailable(error: BaseException) -> bool:
    if isinstance(error, asyncpg.PostgresError):
        sqlstate = getattr(error, "sqlstate", None) or ""
        return sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES
    if isinstance(error, asyncpg.ConnectionDoesNotExistError | asyncpg.InternalClientError):
        # The latter: a pooled connection the server closed while idle, used before asyncpg
        # noticed ("cannot switch to state …; another operation is in progress").
        return True
    if isinstance(error, asyncpg.InterfaceError):
        return any(text in str(error) for text in _CLOSED_MESSAGES)
    # OSError covers refused, reset and missing sockets; TimeoutError a connect or an acquire
    # that did not finish (asyncio.TimeoutError is TimeoutError since Python 3.11). Only when
    # raised inside asyncpg: a mail server's refusal is not the database's.
    return isinstance(error, OSError | TimeoutError) and _raised_in_asyncpg(error)


def _raised_in_asyncpg(error: BaseException) -> bool:
    tb = error.__traceback__
    while tb is not None:
        if _ASYNCPG_DIR in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def database_unavailable(error: BaseException) -> bool:
    """Whether `error` (or what it was raised from or during) means the database went away.

    The chain is followed because a lost connection often surfaces as a second error: the
    rollback of a transaction whose connection died raises its own InterfaceError."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if _is_unavailable(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def error_name(error: BaseException) -> str:
    """The class (and SQLSTATE) of an outage error, for a one-line log entry."""
    sqlstate = getattr(error, "sqlstate", None)
    return f"{type(error).__name__} sqlstate={sqlstate}" if sqlstate else type(error).__name__
