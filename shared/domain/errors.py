"""The refusals of the domain: plain exceptions, free of HTTP, that each face (the JSON API, the
pages) turns into its own answer in one place.

Every refusal has a stable `code` (the API's problem type, a page's choice of wording), a
`message` written for whoever asked, the request `path` it is about when there is one, and
`details`, JSON-ready values a face may show. The kind of refusal is its class:

* `InvalidField`: a value that cannot work (422 naming the field);
* `NotFound`: what was asked for does not exist (404);
* `Conflict`: the current state forbids it (409), `Busy` when concurrent writers kept winning;
* `Stale`: the caller's version of a record is out of date (412, with the current one);
* `Forbidden`: the caller may not do this (403);
* `TooMany`: a limit was reached (429, with when to try again).

Describing some refusals needs the database (the next free times after a conflict): `explain`
fills those in, and the transaction helper calls it once the failed transaction has rolled back.
"""

from __future__ import annotations

from typing import Any, ClassVar

import asyncpg

Executor = asyncpg.Connection | asyncpg.Pool


class DomainError(Exception):
    code: ClassVar[str] = "refused"

    def __init__(
        self, message: str, *, path: str | None = None, code: str | None = None, **details: Any
    ) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.message = message
        self.path = path
        if code is not None:
            self.code = code  # type: ignore[misc]  # an instance may refine its class's code
        self.details: dict[str, Any] = details

    async def explain(self, db: Executor) -> None:
        """Read what describing this refusal needs, after the transaction rolled back."""


class InvalidField(DomainError):
    """A rule only the domain can check, about one request field."""

    code = "validation"

    def __init__(self, path: str, message: str, **details: Any) -> None:
        super().__init__(message, path=path, **details)


class NotFound(DomainError):
    code = "not-found"

    def __init__(self, what: str, ident: object, message: str | None = None) -> None:
        super().__init__(message or f"no {what} with id {ident}")
        self.what = what
        self.ident = ident


class Conflict(DomainError):
    code = "conflict"


class Busy(Conflict):
    """Concurrent changes kept undoing this one (deadlocks, serialization failures)."""

    code = "busy"


class Stale(DomainError):
    """The caller read `current` at an older version; nothing was changed."""

    code = "stale"

    def __init__(self, what: str, current: Any) -> None:
        version = int(current.version)
        super().__init__(
            f"the {what} changed since you read it (now version {version}); read it again",
            current_version=version,
        )
        self.what = what
        self.current = current


class Forbidden(DomainError):
    code = "forbidden"


class TooMany(DomainError):
    """A limit was reached; `retry_after` seconds until it frees up."""

    code = "rate-limited"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, retry_after)
