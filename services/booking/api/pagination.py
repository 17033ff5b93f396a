"""The one way every list of the JSON API pages: keyset cursors and one `Page` shape.

* Every list takes `limit` (1..200, default 50) and `cursor`, and refuses any other parameter it
  does not declare (`PageQuery` is a `Query`).
* Every list answers `Page[T]`: `{"items": [...], "next_cursor": "..." | null}`. Pass
  `next_cursor` back as `cursor` for the next page; null means there is nothing after this page.
* A cursor is opaque to clients: inside it is the keyset of the last item shown (its id, or
  e.g. its start and id), as JSON in URL-safe base64. Keyset pages stay exact while rows are
  added: nothing is skipped or shown twice. A cursor that is not one we handed out is a 422.
* The store is asked for `limit + 1` rows: the extra row only says that there is more, so a
  full last page has no `next_cursor` and is never followed by an empty page.

This module registers no routes.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Annotated, Any, Generic, Self, TypeVar

from pydantic import BaseModel, Field, StringConstraints

from services.booking.api.fields import MAX_ID, Query, optional
from services.booking.api.framework import invalid

Cursor = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,200}$"),
    Field(description="next_cursor from the previous page"),
]


class PageQuery(Query):
    """`limit` and `cursor` of every list; a list with filters derives its query from this."""

    limit: int = Field(50, ge=1, le=200, description="items per page")
    cursor: Cursor = optional()

    def after(self, *kinds: type) -> list[Any] | None:
        """The keyset values the cursor carries (checked against `kinds`), None on the first
        page, or a 422 for a cursor this list did not hand out."""
        return decode_cursor(self.cursor, *kinds)

    def after_id(self) -> int | None:
        """The id the cursor continues after, for lists ordered by id (newest-first lists
        continue below it)."""
        (after,) = self.after(int) or [None]
        return after

    @property
    def fetch(self) -> int:
        """How many rows to ask the store for: one more than a page, to know if there are more."""
        return self.limit + 1


T = TypeVar("T")
R = TypeVar("R")


class Page(BaseModel, Generic[T]):
    """One page of a list. `Page[PatientSummary]` is named `PatientSummaryPage` in the OpenAPI
    document, and every page has exactly these two fields."""

    items: list[T]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null: this is the last page"
    )

    @classmethod
    def model_parametrized_name(cls, params: tuple[type[Any], ...]) -> str:
        (item,) = params
        return f"{getattr(item, '__name__', 'Item')}Page"

    @classmethod
    def of(
        cls,
        rows: Sequence[R],
        limit: int,
        view: Callable[[R], T] | None = None,
        key: Callable[[R], tuple[Any, ...]] | None = None,
    ) -> Self:
        """The page of `rows` (up to limit + 1 of them, as the store was asked for `fetch`):
        the first `limit` as `view` shows them, and a cursor after the last one shown, made of
        its `key` values (default: its id), when there are more."""
        shown = rows[:limit]
        items = [view(row) for row in shown] if view is not None else list(shown)
        return cls(items=items, next_cursor=next_cursor(rows, limit, key or by_id))


def next_cursor(
    rows: Sequence[R], limit: int, key: Callable[[R], tuple[Any, ...]] | None = None
) -> str | None:
    """The cursor after the `limit`th of `rows` (fetched as limit + 1), None when there is no
    row after it: for lists whose items are not made one row at a time (see `Page.of`)."""
    if len(rows) <= limit:
        return None
    return encode_cursor(*(key or by_id)(rows[limit - 1]))


def by_id(row: Any) -> tuple[int]:
    """The keyset of lists ordered by id: a row's (or item's) `id`."""
    return (row["id"] if isinstance(row, Mapping) else row.id,)


def encode_cursor(*values: Any) -> str:
    raw = json.dumps(list(values), separators=(",", ":"), default=_json_value).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _json_value(value: Any) -> str:
    if isinstance(value, date):  # datetimes too
        return value.isoformat()
    raise TypeError(f"a cursor cannot hold {type(value).__name__}")


def decode_cursor(cursor: str | None, *kinds: type) -> list[Any] | None:
    """The keyset values a cursor carries (each checked against `kinds`), or a 422."""
    if cursor is None:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list) or len(values) != len(kinds):
            raise ValueError
        return [_cursor_value(value, kind) for value, kind in zip(values, kinds, strict=True)]
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
        raise invalid("cursor", "is not a cursor this list handed out", where="query") from None


def _cursor_value(value: Any, kind: type) -> Any:
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_ID:
            raise ValueError
        return value
    if kind is datetime and isinstance(value, str):
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError
        return moment
    if kind is date and isinstance(value, str):
        return date.fromisoformat(value)
    raise ValueError
