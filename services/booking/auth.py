"""Bearer-token authentication and role checks for the admin API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps

from aiohttp import web

from shared.store import staff_tokens
from shared.store.staff_tokens import Role, StaffToken
from shared.web import CLOCK, POOL, problem

STAFF = web.RequestKey("staff", StaffToken)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def staff_of(request: web.Request) -> StaffToken:
    return request[STAFF]


def require_role(*roles: Role) -> Callable[[Handler], Handler]:
    """Allow the handler only to tokens with one of `roles` (401 without a token, 403 else)."""

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return problem(
                    401,
                    "Unauthorized",
                    detail="send an admin API token as 'Authorization: Bearer <token>'",
                    headers={"WWW-Authenticate": 'Bearer realm="regimen"'},
                )
            staff = await staff_tokens.authenticate(
                request.app[POOL], token.strip(), now=request.app[CLOCK].now()
            )
            if staff is None:
                return problem(
                    401,
                    "Unauthorized",
                    detail="the token is unknown or revoked",
                    headers={"WWW-Authenticate": 'Bearer realm="regimen", error="invalid_token"'},
                )
            if staff.role not in roles:
                return problem(
                    403,
                    "Forbidden",
                    detail=f"the {staff.role} role may not do this",
                )
            request[STAFF] = staff
            return await handler(request)

        return guarded

    return decorate
