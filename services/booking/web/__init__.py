"""The booking service's HTML pages: the booking form (`booking_*` modules) and the patient's
self-service pages behind a private link (`self_*` modules), served by the booking app.

This package's own module holds what every page shares: the template environment (`TEMPLATES`,
one jinja2 environment over services/booking/templates/, autoescaped), rendering with a CSRF
token and the security headers, the friendly error page (`PageError`, `html_page`) and where a
domain refusal becomes one, per-address page limits, and reading POSTed forms. Every wording a
patient reads lives in the templates; modules hand them codes and data, never sentences.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Literal, TypeVar

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape

from services.booking.clients import hit_client
from services.booking.web import csrf
from services.booking.web.page_headers import PAGE_SECURITY_HEADERS
from shared.db.outage import RETRY_AFTER_SECONDS, database_unavailable, error_name
from shared.domain.errors import DomainError, Forbidden, InvalidField, NotFound, TooMany
from shared.logging import request_id_var
from shared.scheduling.loader import ClinicInfo, clinic_info
from shared.store import clinics
from shared.web import CLOCK, POOL, SETTINGS, route_pattern

log = logging.getLogger("regimen.booking.pages")

MAX_ID = 2**63 - 1

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PageError(Exception):
    """Answer with the friendly error page for `status` (`kind` picks a more precise text)."""

    def __init__(self, status: int, kind: str = "", *, retry_after: int | None = None) -> None:
        super().__init__(f"{status} {kind}")
        self.status = status
        self.kind = kind
        self.retry_after = retry_after


# -- rendering and error pages -------------------------------------------------------------------


TEMPLATES = web.AppKey("templates", Environment)


def install_templates(app: web.Application) -> Environment:
    """The one template environment of the booking service's pages (and its API docs page)."""
    environment = Environment(
        loader=PackageLoader("services.booking", "templates"),
        autoescape=select_autoescape(["html"]),
    )
    app[TEMPLATES] = environment
    return environment


def templates_of(app: web.Application) -> Environment:
    return app[TEMPLATES]


def secret_of(request: web.Request) -> str:
    secret = request.app[SETTINGS].secret_key
    assert secret, "create_app refuses to start without REGIMEN_SECRET_KEY"
    return secret


def clock_now(request: web.Request) -> datetime:
    return request.app[CLOCK].now()


def add_security_headers(response: web.StreamResponse, *, private: bool) -> None:
    # Booked pages carry the patient's link token in their address: never send it onwards.
    response.headers.update(PAGE_SECURITY_HEADERS)
    if private:
        response.headers["Cache-Control"] = "no-store"


def render(
    request: web.Request,
    name: str,
    *,
    status: int = 200,
    private: bool = False,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> web.Response:
    """A page from book/*.html with a CSRF token for its forms (the cookie is set if missing)."""
    token, cookie = csrf.token_for(request, secret_of(request))
    page = templates_of(request.app).get_template(name).render(csrf_token=token, **context)
    response = web.Response(text=page, status=status, content_type="text/html", headers=headers)
    csrf.set_cookie(request, response, cookie)
    add_security_headers(response, private=private)
    return response


async def _clinic_for_errors(request: web.Request) -> ClinicInfo | None:
    try:
        row = await clinics.first(request.app[POOL])
        return None if row is None else clinic_info(row)
    except Exception:  # the error page must render even when the database is the problem
        return None


async def error_page(request: web.Request, error: PageError) -> web.Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return render(
        request,
        "book/error.html",
        status=error.status,
        headers=headers,
        clinic=await _clinic_for_errors(request),
        status_code=error.status,
        kind=error.kind,
        retry_after=error.retry_after,
        request_id=request_id_var.get(),
    )


def html_page(handler: Handler) -> Handler:
    """Friendly HTML error pages instead of problem+json or a stack trace."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except PageError as error:
            return await error_page(request, error)
        except DomainError as refusal:
            return await error_page(request, page_error(refusal))
        except web.HTTPException as error:
            if error.status < 400:
                raise
            return await error_page(request, PageError(error.status))
        except Exception as exc:
            if database_unavailable(exc):
                # PostgreSQL restarting or failing over (shared.db.outage): try again shortly.
                log.warning(
                    "database unavailable",
                    extra={"path": route_pattern(request), "error": error_name(exc)},
                )
                return await error_page(
                    request, PageError(503, "unavailable", retry_after=RETRY_AFTER_SECONDS)
                )
            # The traceback names code, not the patient's answers; the route pattern stands for
            # the path, which may carry a link or hold token.
            log.exception("booking page failed", extra={"path": route_pattern(request)})
            return await error_page(request, PageError(500))

    return wrapper


def page_error(refusal: DomainError) -> PageError:
    """A domain refusal no page handles on its own, as the friendly error page: the one place
    the pages map refusals (pages that can do better, such as offering other times when a time
    was taken, catch theirs first)."""
    if isinstance(refusal, TooMany):
        return PageError(429, retry_after=refusal.retry_after)
    if isinstance(refusal, NotFound):
        return PageError(404)
    if isinstance(refusal, Forbidden):
        return PageError(403)
    if isinstance(refusal, InvalidField):
        return PageError(400)
    return PageError(409)


# -- limits and forms -----------------------------------------------------------------------------


async def limit_page(request: web.Request, kind: Literal["reads", "writes"]) -> None:
    """Per client address and minute, counted apart from the JSON API's buckets."""
    verdict = await hit_client(request.app[POOL], request, "pages", kind, clock_now(request))
    if verdict is not None and not verdict.allowed:
        raise PageError(429, retry_after=verdict.retry_after)


async def posted_form(request: web.Request) -> Mapping[str, Any]:
    """The POSTed form, once the rate limit and the CSRF token allow it."""
    await limit_page(request, "writes")
    form = await request.post()
    if not csrf.valid(request, form_text(form, csrf.FIELD), secret_of(request)):
        raise PageError(403, "csrf")
    return form


def form_text(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name)
    return value if isinstance(value, str) else ""


def form_values(params: Mapping[str, Any], name: str) -> list[str]:
    getall = getattr(params, "getall", None)
    values = getall(name, []) if getall is not None else [params.get(name)]
    return [v for v in values if isinstance(v, str)]


def parse_int(text: str, *, low: int = 1, high: int = MAX_ID) -> int | None:
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    number = int(text)
    return number if low <= number <= high else None
