"""The booking service: public pages, the patient API and the admin API."""

from __future__ import annotations

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape

from services.booking.auth import require_role, staff_of
from shared.clock import Clock
from shared.config import Settings
from shared.store import clinics
from shared.web import POOL, create_base_app

TEMPLATES = web.AppKey("templates", Environment)


async def home(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    clinic = await clinics.first_clinic(pool)
    treatments = await clinics.list_treatments(pool, clinic["id"]) if clinic else []
    page = (
        request.app[TEMPLATES]
        .get_template("home.html")
        .render(clinic=clinic, treatments=treatments)
    )
    return web.Response(text=page, content_type="text/html")


@require_role("admin", "front_desk", "clinician")
async def whoami(request: web.Request) -> web.Response:
    staff = staff_of(request)
    return web.json_response({"id": staff.id, "name": staff.name, "role": staff.role})


def create_app(settings: Settings, clock: Clock, database_url: str) -> web.Application:
    app = create_base_app("booking", settings, clock, database_url)
    app[TEMPLATES] = Environment(
        loader=PackageLoader("services.booking", "templates"),
        autoescape=select_autoescape(["html"]),
    )
    app.router.add_get("/", home)
    app.router.add_get("/api/v1/me", whoami)
    return app
