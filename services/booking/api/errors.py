"""Domain refusals as problem documents: the one place the JSON API maps them to HTTP.

| refusal | status |
| --- | --- |
| `InvalidField` | 422, `errors` naming the field by its path |
| `NotFound` | 404 |
| `Stale` | 412, with the current version (and its ETag) |
| `Forbidden` | 403 |
| `TooMany` | 429, with `Retry-After` |
| `Conflict` (and `Busy`) | 409 |

The problem's `type` is the refusal's code and its `detail` the refusal's message; the
refusal's details become members of the document. A few refusals carry structures the API
shows in its own shapes (a move's gaps and alternatives), and one says less to the front desk
than to clinicians (a check-in waiting for review does not quote the screening answers).
"""

from __future__ import annotations

from typing import Any

from services.booking.api.framework import ApiError
from services.booking.api.move_views import alternative_out, gap_out, shift_out
from services.booking.domain.errors import GapRefused, SlotUnavailable
from shared.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidField,
    NotFound,
    Stale,
    TooMany,
)
from shared.store.staff_tokens import Role

# Roles that may read clinical text (the same set as common.CLINICAL).
_CLINICAL_READERS: frozenset[Role] = frozenset({"admin", "clinician"})


def api_error(error: DomainError, role: Role | None = None, *, where: str = "body") -> ApiError:
    """The problem document for `error`, as `role` (None: the public) may see it; `where` is
    the part of the request a field path points into (body, query, header)."""
    if isinstance(error, InvalidField):
        path = error.path or "(root)"
        return ApiError(
            422,
            "Unprocessable Content",
            f"{path}: {error.message}",
            type_="validation",
            errors=[{"in": where, "path": path, "message": error.message}],
            **error.details,
        )
    if isinstance(error, NotFound):
        return ApiError(404, "Not Found", error.message, type_="not-found")
    if isinstance(error, Stale):
        version = error.details["current_version"]
        # With the current ETag, so a client can re-read and retry without guessing.
        return ApiError(
            412,
            "Precondition Failed",
            error.message,
            type_="stale",
            headers={"ETag": f'"{version}"'},
            current_version=version,
        )
    if isinstance(error, Forbidden):
        return ApiError(403, "Forbidden", error.message, type_=error.code, **error.details)
    if isinstance(error, TooMany):
        return ApiError(
            429,
            "Too Many Requests",
            error.message,
            type_=error.code,
            headers={"Retry-After": str(error.retry_after)},
            retry_after=error.retry_after,
        )
    if isinstance(error, Conflict):
        return _conflict(error, role)
    return ApiError(409, "Conflict", error.message, type_=error.code, **error.details)


def _conflict(error: Conflict, role: Role | None) -> ApiError:
    members: dict[str, Any] = dict(error.details)
    message = error.message
    if error.code == "needs-review" and role not in _CLINICAL_READERS:
        # The reasons quote screening answers: the desk learns that a review is pending, not why.
        members.pop("review_reasons", None)
        message = "a clinician must review this appointment before check-in"
    if isinstance(error, SlotUnavailable):
        members["alternatives"] = [
            alternative_out(slot, error.zone).model_dump(mode="json") for slot in error.alternatives
        ]
    if isinstance(error, GapRefused):
        members["gaps"] = [gap_out(g).model_dump(mode="json") for g in error.check.gaps]
        members["proposed_shifts"] = [
            shift_out(s, error.zone).model_dump(mode="json") for s in error.plan.shifts
        ]
    return ApiError(409, "Conflict", message, type_=error.code, **members)
