"""What every service's aiohttp application shares: the app skeleton, health, readiness, metrics,
request ids, problem+json errors, and the database pool as a `cleanup_ctx` resource."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from shared.clock import Clock
from shared.config import Settings
from shared.db import migrate
from shared.db.outage import RETRY_AFTER_SECONDS, database_unavailable, error_name
from shared.db.pool import create_pool
from shared.logging import describe_database_error, request_id_var

log = logging.getLogger("regimen.http")

SERVICE = web.AppKey("service", str)
SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
DATABASE_URL = web.AppKey("database_url", str)
POOL = web.AppKey("pool", asyncpg.Pool)
REGISTRY = web.AppKey("registry", CollectorRegistry)
STOPPING = web.AppKey("stopping", dict[str, bool])
# Parts of /readyz's answer (the sweeps' health): each returns keys to add to it. Shown only
# where /metrics is too (an internal port), never on booking's public port.
READY_DETAILS = web.AppKey("ready_details", list[Callable[[], dict[str, Any]]])
_SHOW_DETAILS = web.AppKey("show_ready_details", bool)

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


def database_unavailable_problem() -> web.Response:
    """The answer to a request that needed the database while it was away (shared.db.outage):
    503 with Retry-After; nothing is known to have been done, and retrying is safe for reads and
    for writes with an Idempotency-Key."""
    return problem(
        503,
        "Service Unavailable",
        detail="the database is unavailable for a moment; please try again shortly",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


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
    route_name = route_pattern(request)
    status = 500
    try:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                # A raised redirect: aiohttp sends the exception itself as the answer, so it is
                # recorded as its own status and carries the request id like any other answer.
                status = exc.status
                exc.headers["X-Request-Id"] = request_id
                raise
            kept = {
                k: v
                for k, v in exc.headers.items()
                if k.lower() not in ("content-type", "content-length")
            }
            response = problem(exc.status, exc.reason, headers=kept)
        except Exception as exc:
            if database_unavailable(exc):
                # PostgreSQL restarting or failing over: the client may try again shortly.
                log.warning(
                    "database unavailable", extra={"path": route_name, "error": error_name(exc)}
                )
                response = database_unavailable_problem()
            else:
                # The route pattern, never the path: /s/<token>/… carries a private link.
                log.exception("unhandled error", extra={"path": route_name})
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


def request_target(request: web.Request) -> str:
    """The path and query exactly as the client sent them (webhook signatures cover them byte
    for byte); for an absolute-form target, its path and query."""
    raw = request.raw_path
    return raw if raw.startswith("/") else request.rel_url.raw_path_qs


def route_pattern(request: web.Request) -> str:
    """What logs and metrics name a request by: `/s/{token}`, never the token itself."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


_HTTP_METRICS = web.AppKey("http_metrics", tuple)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": request.app[SERVICE]})


def _ready_details(app: web.Application) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if app[_SHOW_DETAILS]:
        for part in app[READY_DETAILS]:
            details.update(part())
    return details


async def readyz(request: web.Request) -> web.Response:
    """200 when the database answers and its migrations are this release's; 503 otherwise.
    Sweep health is detail only: a late sweep does not make the service unready."""
    app = request.app
    details = _ready_details(app)
    if app[STOPPING]["value"]:
        return problem(503, "Service Unavailable", detail="shutting down", **details)
    try:
        async with app[POOL].acquire(timeout=2) as conn:
            pending = await migrate.pending_migrations(cast(asyncpg.Connection, conn))
    except migrate.MigrationMismatch as exc:
        log.warning("not ready: migrations differ", extra={"error": str(exc)})
        return problem(
            503,
            "Service Unavailable",
            detail="the database's migrations differ from this release",
            **details,
        )
    except Exception as exc:  # any failure to reach the database means "not ready"
        # The probe is public on the booking port: the reason (host names, server messages)
        # goes to the log, the caller learns only that the database is the problem.
        log.warning("not ready: database unreachable", extra={"error": _error_name(exc)})
        return problem(503, "Service Unavailable", detail="database unreachable", **details)
    if pending:
        return problem(
            503,
            "Service Unavailable",
            detail=f"{len(pending)} migration(s) not applied; run 'regimen migrate'",
            **details,
        )
    return web.json_response({"status": "ready", "service": app[SERVICE], **details})


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, asyncpg.PostgresError):
        return describe_database_error(exc)
    # Connection errors name the address tried, which is the operator's own configuration.
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else type(exc).__name__


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
    service: str,
    settings: Settings,
    clock: Clock,
    database_url: str,
    *,
    public_metrics: bool = True,
) -> web.Application:
    """The skeleton every service starts from; services add their routes and cleanup contexts.

    `public_metrics=False` leaves /metrics off this app (booking: its port faces the internet);
    `create_metrics_app` then serves the same registry on an internal port."""
    app = web.Application(middlewares=[request_context], client_max_size=1024**2)
    registry = CollectorRegistry()
    app[SERVICE] = service
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[DATABASE_URL] = database_url
    app[REGISTRY] = registry
    app[STOPPING] = {"value": False}
    app[READY_DETAILS] = []
    app[_SHOW_DETAILS] = public_metrics
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
    if public_metrics:
        app.router.add_get("/metrics", metrics)
    return app


def create_metrics_app(service_app: web.Application) -> web.Application:
    """Only /metrics, from `service_app`'s registry: a second site of the same process, on a port
    that Prometheus reaches and the public does not."""
    app = web.Application()
    app[REGISTRY] = service_app[REGISTRY]
    app.router.add_get("/metrics", metrics)
    return app
