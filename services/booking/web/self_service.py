"""The patient's self-service pages behind the private link `/s/{token}`: their courses and
sessions; confirm, reschedule or cancel one session; book a course's next session; change
mobile, email and consents.

The link (shared.links) is the only credential: it names the patient and expires. Every action
loads the appointment and checks that it belongs to the link's patient, so another id shows
nothing and changes nothing. Changes go through the same domain functions staff use
(services/booking/domain), audited as done by the patient, who may never override
the hard minimum gap or the cancellation notice. Forms carry the version the patient last saw, so
a change made meanwhile (by the clinic, or in another tab) is reported instead of overwritten.

Plain HTML forms (JavaScript is never needed), each with a CSRF token. After a change the browser
is sent (303) back to the overview with a message code in the query string, never personal data.
Every wording shown to the patient lives in templates/self/; this module passes data.

Modules: self_visit (the link, shared pieces), self_overview (overview, confirm, cancel),
self_move (the time picker and the move), self_next (booking a course's next session),
self_contact (contact details, consents); this one
adds the per-address limit and the routes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from services.booking.clients import hit_client
from services.booking.web import PageError, error_page
from services.booking.web.self_contact import consents, contact
from services.booking.web.self_move import move, move_form
from services.booking.web.self_next import book_next, next_form
from services.booking.web.self_overview import cancel, cancel_form, confirm, overview
from services.booking.web.self_visit import PRIVATE, renew
from shared.web import CLOCK, POOL

# -- rate limit --------------------------------------------------------------------------------


@web.middleware
async def limit_per_address(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every request under /s/ counts against the client address's reads (GET) or writes (any
    other method) a minute, before the link is even looked at, so that a client hammering the
    pages (or trying links) is slowed whatever it sends; over the limit it gets the booking
    pages' friendly 429 page."""
    if not request.path.startswith("/s/"):
        return await handler(request)
    kind = "reads" if request.method in ("GET", "HEAD") else "writes"
    now = request.app[CLOCK].now()
    verdict = await hit_client(request.app[POOL], request, "self-service", kind, now)
    if verdict is not None and not verdict.allowed:
        response = await error_page(request, PageError(429, retry_after=verdict.retry_after))
        response.headers.update(PRIVATE)
        return response
    return await handler(request)


# -- routes ------------------------------------------------------------------------------------


def install_self_service(app: web.Application) -> None:
    app.middlewares.append(limit_per_address)
    session = "/s/{token}/sessions/{appointment_id}"
    app.router.add_get("/s/{token}", overview)
    app.router.add_post(session + "/confirm", confirm)
    app.router.add_get(session + "/move", move_form)
    app.router.add_post(session + "/move", move)
    app.router.add_get(session + "/cancel", cancel_form)
    app.router.add_post(session + "/cancel", cancel)
    app.router.add_get("/s/{token}/courses/{series_id}/next", next_form)
    app.router.add_post("/s/{token}/courses/{series_id}/next", book_next)
    app.router.add_post("/s/{token}/contact", contact)
    app.router.add_post("/s/{token}/consents", consents)
    app.router.add_post("/s/{token}/renew", renew)
