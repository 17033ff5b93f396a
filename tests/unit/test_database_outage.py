"""Which errors mean "the database is away" (shared/db/outage.py): those answer 503 with
Retry-After and are logged in one line; anything else stays a 500 with its traceback."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from shared.db.outage import database_unavailable


async def test_connecting_to_a_stopped_server_counts_as_the_database_away(tmp_path: Path) -> None:
    # A stopped PostgreSQL leaves no socket behind: asyncpg raises the OS's own error.
    with pytest.raises(OSError) as raised:
        await asyncpg.connect(f"postgresql://postgres@/regimen?host={tmp_path}", timeout=2)
    assert database_unavailable(raised.value)


def test_an_os_error_of_our_own_is_not_mistaken_for_an_outage(tmp_path: Path) -> None:
    # e.g. a mail server refusing the connection, or a missing file: a real fault, a real 500.
    with pytest.raises(OSError) as raised:
        (tmp_path / "missing").read_text()
    assert not database_unavailable(raised.value)


def test_a_server_shutting_down_or_starting_counts_and_a_refused_row_does_not() -> None:
    assert database_unavailable(asyncpg.AdminShutdownError("terminating connection"))
    assert database_unavailable(asyncpg.CannotConnectNowError("the database is starting up"))
    assert database_unavailable(asyncpg.TooManyConnectionsError("too many clients"))
    assert database_unavailable(asyncpg.ConnectionDoesNotExistError("connection was closed"))
    assert not database_unavailable(asyncpg.UniqueViolationError("duplicate key"))
    assert not database_unavailable(asyncpg.InterfaceError("cannot call Connection.x here"))


def test_a_rollback_failing_after_the_connection_died_counts() -> None:
    # The error a handler sees is the rollback's; the cause is the connection that died.
    try:
        try:
            raise asyncpg.ConnectionDoesNotExistError("connection was closed")
        except asyncpg.ConnectionDoesNotExistError:
            raise RuntimeError("rollback failed") from None
    except RuntimeError as error:
        # `from None` hides the context from tracebacks but keeps it on the error.
        assert database_unavailable(error)
