"""Who am I: the token's identity and role (a quick check that a token works)."""

from __future__ import annotations

from pydantic import BaseModel

from services.booking.api import API
from services.booking.api.common import ALL_STAFF
from services.booking.api.framework import Ctx


class Me(BaseModel):
    id: int
    name: str
    role: str


@API.route(
    "GET", "/api/v1/me", summary="The calling token", tag="auth", roles=ALL_STAFF, response=Me
)
async def get_me(ctx: Ctx) -> Me:
    assert ctx.staff is not None
    return Me(id=ctx.staff.id, name=ctx.staff.name, role=ctx.staff.role)
