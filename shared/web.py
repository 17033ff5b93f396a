"""What every service's aiohttp application shares: the app skeleton, health, readiness, metrics,
request ids, problem+json errors, and the database pool as a `cleanup_ctx` resource."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from shared.clock import Clock
from shared.config import Settings
from shared.db import migrate
from shared.db.pool import create_pool
from shared.logging import request_id_var

log = logging.getLogger("regimen.http")

SERVICE = web.AppKey("service", str)
SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
DATABASE_URL = web.AppKey("database_url", str)
POOL = web.AppKey("pool", asyncpg.Pool)
REGISTRY = web.AppKey("registry", CollectorRegistry)
STOPPING = web.AppKey("stopping", dict[str, bool])

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PROBLEM_JSON = "application/problem+json"


def problem(
    status: int,
    title: str,
    *,
    detail: str | None = None,
    type_: str = "about:blank",
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """An RFC 9457 problem document."""
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail is not None:
        body["detail"] = detail
    if errors is not None:
        body["errors"] = errors
    body.update(extra)
    return web.json_response(body, status=status, content_type=PROBLEM_JSON, headers=headers)


_REQUEST_ID_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _incoming_request_id(request: web.Request) -> str:
    # Accept a load balancer's id only if it is short and harmless; it ends up in every log line.
    given = request.headers.get("X-Request-Id", "")
    if 0 < len(given) <= 64 and set(given) <= _REQUEST_ID_OK:
        return given
    return secrets.token_hex(8)


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, access log line, metrics, and problem+json instead of a bare error page."""
    request_id = _incoming_request_id(request)
    token = request_id_var.set(request_id)
    started = time.perf_counter()
    app = request.app
    route = request.match_info.route.resource
    route_name = route.canonical if route is not None else "unmatched"
    status = 500
    try:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            kept = {
                k: v
                for k, v in exc.headers.items()
                if k.lower() not in ("content-type", "content-length")
            }
            response = problem(exc.status, exc.reason, headers=kept)
        except Exception:
            log.exception("unhandled error", extra={"path": request.path})
            response = problem(
                500,
                "Internal Server Error",
                detail=f"Something went wrong on our side; quote request id {request_id}.",
            )
        status = response.status
        response.headers["X-Request-Id"] = request_id
        return response
    finally:
        elapsed = time.perf_counter() - started
        metrics = app[_HTTP_METRICS]
        metrics[0].labels(request.method, route_name, str(status)).inc()
        metrics[1].labels(request.method, route_name).observe(elapsed)
        # The path without its query string: links carry tokens, which stay out of logs.
        log.info(
            "request",
            extra={
                "method": request.method,
                # The route pattern, not the path: paths carry tokens (patient links).
                "path": route_name,
                "status": status,
                "ms": round(elapsed * 1000, 1),
            },
        )
        request_id_var.reset(token)


_HTTP_METRICS = web.AppKey("http_metrics", tuple)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": request.app[SERVICE]})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    if app[STOPPING]["value"]:
        return problem(503, "Service Unavailable", detail="shutting down")
    try:
        async with app[POOL].acquire(timeout=2) as conn:
            pending = await migrate.pending_migrations(conn)
    except migrate.MigrationMismatch as exc:
        return problem(503, "Service Unavailable", detail=str(exc))
    except Exception as exc:  # any failure to reach the database means "not ready"
        return problem(503, "Service Unavailable", detail=f"database unreachable: {exc}")
    if pending:
        return problem(
            503,
            "Service Unavailable",
            detail=f"{len(pending)} migration(s) not applied; run 'regimen migrate'",
        )
    return web.json_response({"status": "ready", "service": app[SERVICE]})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def _database_pool(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[POOL] = await create_pool(app[DATABASE_URL], max_size=settings.db_pool_size)
    yield
    await app[POOL].close()


async def _mark_stopping(app: web.Application) -> None:
    app[STOPPING]["value"] = True


def create_base_app(
    service: str, settings: Settings, clock: Clock, database_url: str
) -> web.Application:
    """The skeleton every service starts from; services add their routes and cleanup contexts."""
    app = web.Application(middlewares=[request_context], client_max_size=1024**2)
    registry = CollectorRegistry()
    app[SERVICE] = service
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[DATABASE_URL] = database_url
    app[REGISTRY] = registry
    app[STOPPING] = {"value": False}
    app[_HTTP_METRICS] = (
        Counter(
            "regimen_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=registry,
        ),
        Histogram(
            "regimen_http_request_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            registry=registry,
        ),
    )
    app.cleanup_ctx.append(_database_pool)
    app.on_shutdown.append(_mark_stopping)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
