"""Twilio's webhooks at the booking service's URL are forwarded to the notifier unchanged (the
request target, the body bytes, the signature), the notifier's answer comes back as it is, and
what cannot be forwarded gets a bounded, retryable answer, never a 500.

The "notifier" here is a recording stand-in on a real socket, so each test can see exactly what
arrived; tests/test_twilio_callbacks.py runs the real services as processes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
import yarl
from aiohttp import web
from multidict import CIMultiDictProxy

from services.booking.app import create_app as create_booking
from services.booking.twilio_forwarding import LIMITS, ForwardLimits
from shared.clock import FrozenClock
from shared.config import Settings
from tests.conftest import serve_app
from tests.processes import free_port

FORM = (
    b"MessageSid=SM0123&From=%2B447700900123&To=%2B15005550006"
    b"&Body=my+throat+is+swelling&NumMedia=0"
)
FORM_TYPE = "application/x-www-form-urlencoded; charset=utf-8"


@dataclass
class Arrival:
    target: str
    headers: CIMultiDictProxy[str]
    body: bytes


@dataclass
class FakeNotifier:
    """Records what reaches it and answers as told."""

    base: str = ""
    arrivals: list[Arrival] = field(default_factory=list)
    status: int = 200
    content_type: str = "application/xml"
    text: str = '<?xml version="1.0" encoding="UTF-8"?><Response />'
    hang_seconds: float = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        self.arrivals.append(Arrival(request.raw_path, request.headers, await request.read()))
        if self.hang_seconds:
            await asyncio.sleep(self.hang_seconds)
        return web.Response(
            status=self.status,
            text=self.text,
            content_type=self.content_type,
            headers={"Retry-After": "7"} if self.status == 503 else None,
        )


@pytest.fixture
async def fake_notifier() -> AsyncIterator[FakeNotifier]:
    fake = FakeNotifier()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner, fake.base = await serve_app(app)
    yield fake
    await runner.cleanup()


async def _booking(
    settings: Settings, clock: FrozenClock, db_url: str, notifier_url: str
) -> tuple[web.AppRunner, str]:
    app = create_booking(settings.with_overrides(notifier_url=notifier_url), clock, db_url)
    app[LIMITS] = ForwardLimits(max_body=4096, timeout=1.0, retry_after_seconds=5)
    return await serve_app(app)


@pytest.fixture
async def booking(
    settings: Settings, clock: FrozenClock, db_url: str, fake_notifier: FakeNotifier
) -> AsyncIterator[str]:
    runner, base = await _booking(settings, clock, db_url, fake_notifier.base)
    yield base
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_a_webhook_reaches_the_notifier_byte_for_byte_and_its_answer_comes_back(
    booking: str, fake_notifier: FakeNotifier, http: aiohttp.ClientSession
) -> None:
    target = "/twilio/sms?clinic=north%2Fwest&n=7"
    headers = {
        "Content-Type": FORM_TYPE,
        "X-Twilio-Signature": "c2lnbmF0dXJl+/=",
        "I-Twilio-Idempotency-Token": "idem-1",
        "User-Agent": "TwilioProxy/1.1",
        # One connection's business, or booking's own: none of it is the notifier's.
        "Connection": "keep-alive, X-Hop-Secret",
        "X-Hop-Secret": "between the proxy and booking only",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic cHJveHk6c2VjcmV0",
        "Cookie": "regimen_csrf=abc",
        "X-Request-Id": "chosen-by-the-caller",
    }
    async with http.post(
        yarl.URL(booking + target, encoded=True), data=FORM, headers=headers
    ) as response:
        assert response.status == 200
        assert response.content_type == "application/xml"
        assert await response.text() == fake_notifier.text
        request_id = response.headers["X-Request-Id"]
    [arrival] = fake_notifier.arrivals
    assert arrival.target == target
    assert arrival.body == FORM
    for name in ("Content-Type", "X-Twilio-Signature", "I-Twilio-Idempotency-Token", "User-Agent"):
        assert arrival.headers[name] == headers[name]
    for name in ("X-Hop-Secret", "Keep-Alive", "Proxy-Authorization", "Cookie"):
        assert name not in arrival.headers
    # Both services' log lines carry the same request id.
    assert arrival.headers["X-Request-Id"] == request_id


async def test_a_chunked_webhook_arrives_whole_with_its_length(
    booking: str, fake_notifier: FakeNotifier, http: aiohttp.ClientSession
) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(FORM), 10):
            yield FORM[start : start + 10]

    async with http.post(
        booking + "/twilio/status?n=3", data=pieces(), headers={"Content-Type": FORM_TYPE}
    ) as response:
        assert response.status == 200
    [arrival] = fake_notifier.arrivals
    assert arrival.body == FORM
    assert "Transfer-Encoding" not in arrival.headers
    assert arrival.headers["Content-Length"] == str(len(FORM))


async def test_the_notifiers_refusal_of_a_forged_signature_passes_through(
    booking: str, fake_notifier: FakeNotifier, http: aiohttp.ClientSession
) -> None:
    fake_notifier.status = 403
    fake_notifier.content_type = "application/problem+json"
    fake_notifier.text = '{"type": "about:blank", "title": "Forbidden", "status": 403}'
    async with http.post(
        booking + "/twilio/status?n=3", data=FORM, headers={"Content-Type": FORM_TYPE}
    ) as response:
        assert response.status == 403
        assert response.content_type == "application/problem+json"
        assert await response.text() == fake_notifier.text


async def test_a_notifier_shutting_down_says_so_and_when_to_retry(
    booking: str, fake_notifier: FakeNotifier, http: aiohttp.ClientSession
) -> None:
    fake_notifier.status = 503
    fake_notifier.content_type = "application/problem+json"
    fake_notifier.text = '{"title": "Service Unavailable", "status": 503}'
    async with http.post(booking + "/twilio/status?n=3", data=FORM) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "7"


@pytest.mark.parametrize("chunked", [False, True])
async def test_an_oversized_webhook_is_refused_and_never_forwarded(
    chunked: bool, booking: str, fake_notifier: FakeNotifier, http: aiohttp.ClientSession
) -> None:
    big = b"Body=" + b"x" * 5000

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    async with http.post(
        booking + "/twilio/sms",
        data=pieces() if chunked else big,
        headers={"Content-Type": FORM_TYPE},
    ) as response:
        assert response.status == 413
        assert response.content_type == "application/problem+json"
    assert fake_notifier.arrivals == []


async def test_a_hung_notifier_gets_a_503_with_retry_after_within_the_timeout(
    booking: str, fake_notifier: FakeNotifier, http: aiohttp.ClientSession
) -> None:
    fake_notifier.hang_seconds = 5
    started = time.monotonic()
    async with http.post(booking + "/twilio/status?n=3", data=FORM) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "5"
        assert response.content_type == "application/problem+json"
        assert "did not answer in time" in (await response.json())["detail"]
    assert time.monotonic() - started < 3  # the 1 s limit, not the notifier's 5 s


async def test_an_unreachable_notifier_gets_a_503_and_the_log_holds_no_patient_data(
    settings: Settings,
    clock: FrozenClock,
    db_url: str,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner, booking = await _booking(settings, clock, db_url, f"http://127.0.0.1:{free_port()}")
    try:
        with caplog.at_level(logging.DEBUG):
            async with http.post(
                booking + "/twilio/sms", data=FORM, headers={"Content-Type": FORM_TYPE}
            ) as response:
                assert response.status == 503
                assert response.headers["Retry-After"] == "5"
                body = await response.json()
        assert body["detail"] == "the notifier cannot be reached; try again later"
    finally:
        await runner.cleanup()
    assert "notifier unreachable" in caplog.text
    for private in ("447700900123", "throat", "SM0123"):
        assert private not in caplog.text
