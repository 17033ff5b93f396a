"""The three services: health, readiness, metrics, request ids, problem+json, staff tokens."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web

from services.booking.app import create_app as create_booking
from services.notifier.app import create_app as create_notifier
from services.scheduler.app import create_app as create_scheduler
from shared.clock import FrozenClock
from shared.config import Settings
from shared.db.pool import create_pool
from shared.logging import JsonFormatter
from shared.store import staff_tokens
from shared.web import create_metrics_app
from tests.conftest import serve_app

FACTORIES: dict[str, Callable[[Settings, FrozenClock, str], web.Application]] = {
    "booking": create_booking,
    "scheduler": create_scheduler,
    "notifier": create_notifier,
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize("service", sorted(FACTORIES))
async def test_health_readiness_and_metrics(
    service: str, settings: Settings, clock: FrozenClock, db_url: str, http: aiohttp.ClientSession
) -> None:
    app = FACTORIES[service](settings, clock, db_url)
    runner, base = await serve_app(app)
    # Booking's own port faces the internet: its metrics have a port of their own.
    metrics_runner, metrics_base = (
        await serve_app(create_metrics_app(app)) if service == "booking" else (None, base)
    )
    try:
        async with http.get(base + "/healthz") as response:
            assert response.status == 200
            assert (await response.json())["service"] == service
        async with http.get(base + "/readyz") as response:
            assert response.status == 200
            assert (await response.json())["status"] == "ready"
        async with http.get(metrics_base + "/metrics") as response:
            text = await response.text()
            assert response.status == 200
            assert (
                'regimen_http_requests_total{method="GET",route="/readyz",status="200"} 1.0' in text
            )
    finally:
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runner.cleanup()


async def test_the_public_booking_port_does_not_serve_metrics(
    settings: Settings, clock: FrozenClock, db_url: str, http: aiohttp.ClientSession
) -> None:
    # Route names, request counts and queue sizes are for the operator's Prometheus, not for
    # anyone on the internet who guesses /metrics.
    runner, base = await serve_app(create_booking(settings, clock, db_url))
    try:
        async with http.get(base + "/metrics") as response:
            assert response.status == 404
            assert "regimen_http_requests" not in await response.text()
        async with http.get(base + "/readyz") as response:
            assert response.status == 200  # health and readiness stay on the public port
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("service", sorted(FACTORIES))
async def test_not_ready_while_migrations_are_pending(
    service: str,
    settings: Settings,
    clock: FrozenClock,
    empty_db_url: str,
    http: aiohttp.ClientSession,
) -> None:
    runner, base = await serve_app(FACTORIES[service](settings, clock, empty_db_url))
    try:
        async with http.get(base + "/readyz") as response:
            assert response.status == 503
            assert response.content_type == "application/problem+json"
            body = await response.json()
            assert "run 'regimen migrate'" in body["detail"]
        async with http.get(base + "/healthz") as response:
            assert response.status == 200  # alive, just not ready
    finally:
        await runner.cleanup()


async def test_request_id_is_echoed_and_logged_without_the_query_string(
    settings: Settings, clock: FrozenClock, db_url: str, http: aiohttp.ClientSession
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("regimen.http")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    runner, base = await serve_app(create_booking(settings, clock, db_url))
    try:
        headers = {"X-Request-Id": "trace-42"}
        async with http.get(base + "/healthz?token=secret", headers=headers) as response:
            assert response.headers["X-Request-Id"] == "trace-42"
        async with http.get(base + "/healthz") as response:
            generated = response.headers["X-Request-Id"]
            assert len(generated) == 16
        async with http.get(base + "/healthz", headers={"X-Request-Id": "bad id;<x>"}) as response:
            assert response.headers["X-Request-Id"] != "bad id;<x>"
    finally:
        await runner.cleanup()
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    first = next(line for line in lines if line.get("request_id") == "trace-42")
    assert first["path"] == "/healthz" and first["status"] == 200
    assert "secret" not in stream.getvalue()


async def test_unknown_path_is_problem_json(
    settings: Settings, clock: FrozenClock, db_url: str, http: aiohttp.ClientSession
) -> None:
    runner, base = await serve_app(create_booking(settings, clock, db_url))
    try:
        async with http.get(base + "/api/v1/nothing-here") as response:
            assert response.status == 404
            assert response.content_type == "application/problem+json"
            assert (await response.json())["status"] == 404
        async with http.post(base + "/healthz") as response:
            assert response.status == 405
            assert response.content_type == "application/problem+json"
    finally:
        await runner.cleanup()


async def test_booking_home_lists_the_clinics_treatments(
    settings: Settings, clock: FrozenClock, db_url: str, http: aiohttp.ClientSession
) -> None:
    from services.devkit.demo_data import seed_demo_data

    pool = await create_pool(db_url)
    async with pool.acquire() as conn:
        assert await seed_demo_data(conn) is True
        assert await seed_demo_data(conn) is False  # a second start does not seed twice
    await pool.close()
    runner, base = await serve_app(create_booking(settings, clock, db_url))
    try:
        async with http.get(base + "/") as response:
            page = await response.text()
        assert "Regimen Demo Hair Clinic" in page
        assert "Hair mesotherapy course" in page
        assert "8 sessions of 30 minutes" in page
        assert "4 to 6 sessions of 45 minutes" in page
    finally:
        await runner.cleanup()


async def test_staff_token_authentication(
    settings: Settings, clock: FrozenClock, db_url: str, http: aiohttp.ClientSession
) -> None:
    pool = await create_pool(db_url)
    token, created = await staff_tokens.insert(
        pool, name="Reception iPad", role="front_desk", now=clock.now()
    )
    stored = await pool.fetchval("SELECT token_hash FROM staff_token WHERE id = $1", created.id)
    assert token.encode() not in stored and stored == staff_tokens.hash_token(token)
    runner, base = await serve_app(create_booking(settings, clock, db_url))
    try:
        async with http.get(base + "/api/v1/me") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        bad = {"Authorization": "Bearer rgm_not-a-real-token"}
        async with http.get(base + "/api/v1/me", headers=bad) as response:
            assert response.status == 401
        good = {"Authorization": f"Bearer {token}"}
        async with http.get(base + "/api/v1/me", headers=good) as response:
            assert response.status == 200
            assert await response.json() == {
                "id": created.id,
                "name": "Reception iPad",
                "role": "front_desk",
            }
        await staff_tokens.revoke_by_name(pool, "Reception iPad", now=clock.now())
        async with http.get(base + "/api/v1/me", headers=good) as response:
            assert response.status == 401
    finally:
        await runner.cleanup()
        await pool.close()


async def test_patient_link_tokens_stay_out_of_the_request_log(
    settings: Settings, clock: FrozenClock, db_url: str, http: aiohttp.ClientSession
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("regimen.http")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    runner, base = await serve_app(create_booking(settings, clock, db_url))
    try:
        async with http.get(base + "/s/SECRETLINKTOKEN123") as response:
            assert response.status in (404, 410)
    finally:
        await runner.cleanup()
        logger.removeHandler(handler)
    logged = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert any(line.get("path") == "/s/{token}" for line in logged)
    assert "SECRETLINKTOKEN123" not in stream.getvalue()
