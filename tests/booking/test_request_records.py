"""Every answer is recorded as sent: a self-service redirect is a 303 in the request log and in
`regimen_http_requests_total`, not a false server error; a 4xx raised by the router and a real
500 (a handler that raises) are counted as what they were; and every one of them carries the
`X-Request-Id` the log line names."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html import unescape

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from services.booking.app import create_app
from services.booking.web import csrf
from services.devkit.demo_data import seed_demo_data
from shared.clock import FrozenClock
from shared.config import Settings
from shared.links import patient_link_token
from shared.logging import JsonFormatter
from shared.web import create_metrics_app
from tests import factories
from tests.conftest import serve_app


@dataclass
class Served:
    base: str
    metrics: str
    log: list[dict[str, object]]


async def _boom(request: web.Request) -> web.Response:
    raise RuntimeError("a bug in a handler")


class _Lines(logging.Handler):
    """The request log as the operator reads it: each record through the JSON formatter."""

    def __init__(self, into: list[dict[str, object]]) -> None:
        super().__init__()
        self.into = into
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(json.loads(self.format(record)))


@pytest.fixture
async def served(
    settings: Settings, clock: FrozenClock, db_url: str, pool: asyncpg.Pool
) -> AsyncIterator[Served]:
    async with pool.acquire() as conn:
        await seed_demo_data(conn)
    app = create_app(settings, clock, db_url)
    app.router.add_get("/test-only/boom", _boom)  # a handler with a bug, in the real app
    runner, base = await serve_app(app)
    metrics_runner, metrics = await serve_app(create_metrics_app(app))
    lines: list[dict[str, object]] = []
    handler = _Lines(lines)
    logger = logging.getLogger("regimen.http")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield Served(base, metrics, lines)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        await metrics_runner.cleanup()
        await runner.cleanup()


async def _counted(http: aiohttp.ClientSession, served: Served, method: str, route: str) -> dict:
    async with http.get(served.metrics + "/metrics") as reply:
        text = await reply.text()
    pattern = (
        rf'regimen_http_requests_total\{{method="{method}",route="{re.escape(route)}",'
        r'status="(\d+)"\} (\S+)'
    )
    return {status: float(n) for status, n in re.findall(pattern, text)}


def _logged(served: Served, request_id: str) -> dict[str, object]:
    [line] = [
        line
        for line in served.log
        if line.get("request_id") == request_id and line.get("message") == "request"
    ]
    return line


async def test_a_self_service_redirect_is_recorded_as_303_not_as_a_server_error(
    served: Served, settings: Settings, clock: FrozenClock, pool: asyncpg.Pool
) -> None:
    clinic_id = int(await pool.fetchval("SELECT min(id) FROM clinic"))
    patient_id = await factories.patient(
        pool,
        clinic_id=clinic_id,
        first_name="Ada",
        last_name="Lovelace",
        mobile="+447911123456",
        email=None,
        date_of_birth=None,
        now=clock.now(),
    )
    assert settings.secret_key
    link = f"/s/{patient_link_token(settings.secret_key, patient_id, 1, now=clock.now())}"
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[served.base])
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.get(served.base + link) as reply:
            page = await reply.text()
        token = re.search(rf'name="{csrf.FIELD}" value="([^"]*)"', page)
        assert token
        async with http.post(
            served.base + link + "/consents",
            data={csrf.FIELD: unescape(token[1])},
            allow_redirects=False,
        ) as reply:
            assert reply.status == 303
            request_id = reply.headers.get("X-Request-Id")
        assert request_id, "the redirect carries the request id the log names"
        assert _logged(served, request_id)["status"] == 303
        route = "/s/{token}/consents"
        assert await _counted(http, served, "POST", route) == {"303": 1.0}


async def test_a_raised_4xx_and_a_real_500_are_recorded_as_sent(served: Served) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(served.base + "/api/v1/nothing-here") as reply:
            assert reply.status == 404
            missing = reply.headers["X-Request-Id"]
        async with http.get(served.base + "/test-only/boom") as reply:
            assert reply.status == 500
            assert reply.content_type == "application/problem+json"
            failed = reply.headers["X-Request-Id"]
            assert failed in (await reply.json())["detail"]
        assert _logged(served, missing)["status"] == 404
        assert _logged(served, failed)["status"] == 500
        assert await _counted(http, served, "GET", "unmatched") == {"404": 1.0}
        assert await _counted(http, served, "GET", "/test-only/boom") == {"500": 1.0}
