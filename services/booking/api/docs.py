"""/api/openapi.json, generated from the endpoints' own models, and /api/docs, a page that
renders it without loading anything from the network."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from jinja2 import Environment

from services.booking.api import API
from services.booking.api.openapi import build_openapi

DESCRIPTION = (
    "Availability, course booking and the admin API of Regimen. Errors are "
    "application/problem+json (RFC 9457); validation errors name each bad field by its path. "
    "Admin endpoints need 'Authorization: Bearer <token>' from `regimen token create`."
)

OPENAPI = web.AppKey("openapi", dict)
TEMPLATES = web.AppKey("docs_templates", Environment)


def openapi_document() -> dict[str, Any]:
    return build_openapi(API, title="Regimen API", version="1", description=DESCRIPTION)


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


async def docs_page(request: web.Request) -> web.Response:
    document = request.app[OPENAPI]
    operations = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            operations.append({"path": path, "method": method.upper(), **operation})
    operations.sort(key=lambda o: (o["tags"][0], o["path"], o["method"]))
    html = (
        request.app[TEMPLATES]
        .get_template("api_docs.html")
        .render(document=document, operations=operations)
    )
    return web.Response(text=html, content_type="text/html")


def install_docs(app: web.Application, templates: Environment) -> None:
    app[OPENAPI] = openapi_document()
    app[TEMPLATES] = templates
    app.router.add_get("/api/openapi.json", openapi_json)
    app.router.add_get("/api/docs", docs_page)
