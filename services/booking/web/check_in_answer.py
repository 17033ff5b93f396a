"""The answer links of an emailed check-in (`/c/{token}`, shared.links' check-in scope): one link
per numbered answer. Opening one shows the question and the chosen answer with a button; only
the button's POST (with the page's CSRF token) records it, so a mail scanner that fetches every
link in a message records nothing. The answer is recorded by the same function as an SMS reply
(shared.domain.check_ins.record_answer), and the page says what happens next for its tier.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from services.booking.web import (
    clock_now,
    html_page,
    limit_page,
    posted_form,
    render,
    secret_of,
)
from services.booking.web.self_visit import PRIVATE
from shared.db.transactions import in_transaction
from shared.domain import check_ins as check_in_domain
from shared.domain.appointment_changes import Change, clinic_of
from shared.domain.emergency import emergency_number
from shared.links import LinkError, open_check_in_link
from shared.store import check_ins
from shared.store.audit import Actor
from shared.store.check_ins import CheckIn
from shared.web import POOL


async def _opened(request: web.Request) -> tuple[CheckIn, int] | web.Response:
    try:
        link = open_check_in_link(
            secret_of(request), request.match_info["token"], now=clock_now(request)
        )
    except LinkError:
        return render(request, "checkin/invalid.html", status=404, private=True, headers=PRIVATE)
    check_in = await check_ins.get(request.app[POOL], link.check_in_id)
    if check_in is None or link.digit not in {a.digit for a in check_in.answers}:
        return render(request, "checkin/invalid.html", status=404, private=True, headers=PRIVATE)
    return check_in, link.digit


async def _page(
    request: web.Request, check_in: CheckIn, digit: int, name: str, **extra: Any
) -> web.Response:
    clinic = await clinic_of(request.app[POOL], check_in.clinic_id)
    label = next(a.label for a in check_in.answers if a.digit == digit)
    return render(
        request,
        name,
        private=True,
        headers=PRIVATE,
        clinic=clinic,
        question=check_in.question,
        digit=digit,
        label=label,
        emergency_number=emergency_number(clinic.region),
        **extra,
    )


@html_page
async def show(request: web.Request) -> web.StreamResponse:
    await limit_page(request, "reads")
    opened = await _opened(request)
    if isinstance(opened, web.Response):
        return opened
    check_in, digit = opened
    if check_in.answered_at is not None or check_in.status == "cancelled":
        return await _page(request, check_in, digit, "checkin/done.html", tier=check_in.tier)
    return await _page(request, check_in, digit, "checkin/confirm.html")


@html_page
async def answer(request: web.Request) -> web.StreamResponse:
    await posted_form(request)
    opened = await _opened(request)
    if isinstance(opened, web.Response):
        return opened
    check_in, digit = opened
    now = clock_now(request)

    async def work(conn: asyncpg.Connection) -> CheckIn | None:
        locked = await check_ins.lock(conn, check_in.id)
        if locked is None:
            return None
        change = Change(Actor("patient", locked.patient_id, "emailed check-in link"), now)
        triage = await check_in_domain.record_answer(conn, locked, str(digit), "email", change)
        return None if triage is None else await check_ins.get(conn, locked.id)

    recorded = await in_transaction(request.app[POOL], work)
    current = recorded or await check_ins.get(request.app[POOL], check_in.id)
    assert current is not None
    return await _page(
        request,
        current,
        current.answer_digit or digit,
        "checkin/done.html",
        tier=current.tier,
        # The same answer sent again (a double click, Back then submit) is thanked as the
        # first was: it is with the clinic. Another answer after it says which one counts.
        just_now=recorded is not None or current.answer_digit == digit,
    )


def install_check_in_answers(app: web.Application) -> None:
    app.router.add_get("/c/{token}", show)
    app.router.add_post("/c/{token}", answer)
