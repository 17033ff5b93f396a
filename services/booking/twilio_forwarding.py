"""Twilio's webhooks (`/twilio/sms`, `/twilio/status`) arriving at the booking service, forwarded
to the notifier unchanged, so a deployment with one public URL works without special routing.

Booking does not check the signature itself: the notifier does, against the URL Twilio called
(REGIMEN_TWILIO_CALLBACK_URL plus the path and query). So what the signature covers passes
through untouched: the request target (path and query, byte for byte), the body bytes, and the
end-to-end headers (X-Twilio-Signature, I-Twilio-Idempotency-Token, Content-Type...). The
notifier's answer (status, content type, body: TwiML for an inbound SMS, a refusal for a forged
signature) comes back as it is.

Bounds, since this port faces the internet (`ForwardLimits`): the body's size, the time for the
whole exchange, the connections open to the notifier at once (further requests wait within the
same time). A notifier that cannot be reached or does not answer in time gives 503 with
Retry-After, never a traceback. Nothing of the request (numbers, message text) is logged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import yarl
from aiohttp import web
from multidict import CIMultiDict

from shared.logging import request_id_var
from shared.providers.sms import WEBHOOK_PATHS
from shared.web import SETTINGS, problem, request_target

log = logging.getLogger("regimen.booking.twilio")


@dataclass(frozen=True)
class ForwardLimits:
    # Twilio's webhooks are a few kilobytes (an SMS body is at most 1,600 characters).
    max_body: int = 64 * 1024
    # For the whole exchange, waiting for a free connection included. Twilio waits 15 s for an
    # answer: ours comes first, so Twilio records our 503 rather than its own timeout.
    timeout: float = 10.0
    connections: int = 50
    retry_after_seconds: int = 5


LIMITS = web.AppKey("twilio_forward_limits", ForwardLimits)

# Headers that describe one connection, not the message (RFC 9110 section 7.6.1), never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
NOT_FORWARDED = HOP_BY_HOP | {
    "host",  # the notifier's, set by the client
    "content-length",  # recomputed for the body sent
    # aiohttp has already decoded a compressed body; the notifier gets it plain.
    "content-encoding",
    "expect",  # answered here
    "cookie",  # booking's own cookies are nothing to the notifier
    "x-request-id",  # replaced by this request's id, so both services' logs name it alike
}

FORWARDER = web.AppKey("twilio_forwarder", aiohttp.ClientSession)


def forwarded_headers(request: web.Request) -> CIMultiDict[str]:
    """The request's end-to-end headers, in order, plus our request id."""
    named_in_connection = {
        token.strip().lower()
        for value in request.headers.getall("Connection", [])
        for token in value.split(",")
    }
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in request.headers.items():
        lower = name.lower()
        if lower not in NOT_FORWARDED and lower not in named_in_connection:
            headers.add(name, value)
    request_id = request_id_var.get()
    if request_id:
        headers["X-Request-Id"] = request_id
    return headers


async def _read_at_most(stream: aiohttp.StreamReader, limit: int) -> bytes | None:
    """The whole stream, or None once it grows past `limit` bytes."""
    body = bytearray()
    async for chunk in stream.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _unavailable(limits: ForwardLimits, detail: str) -> web.Response:
    return problem(
        503,
        "Service Unavailable",
        detail=detail,
        headers={"Retry-After": str(limits.retry_after_seconds)},
    )


async def forward_to_notifier(request: web.Request) -> web.Response:
    limits = request.app[LIMITS]
    too_large = problem(
        413, "Content Too Large", detail=f"a Twilio webhook is at most {limits.max_body} bytes"
    )
    if request.content_length is not None and request.content_length > limits.max_body:
        return too_large
    body = await _read_at_most(request.content, limits.max_body)
    if body is None:
        return too_large
    # encoded=True: the target goes on byte for byte (yarl would otherwise normalise %2F and
    # the like, and the signature covers the URL as Twilio called it).
    url = yarl.URL(request.app[SETTINGS].notifier_base + request_target(request), encoded=True)
    try:
        async with request.app[FORWARDER].post(
            url, data=body, headers=forwarded_headers(request), allow_redirects=False
        ) as answer:
            payload = await _read_at_most(answer.content, limits.max_body)
            if payload is None:
                log.warning("notifier's answer too large", extra={"path": request.path})
                return problem(502, "Bad Gateway", detail="the notifier's answer was too large")
            headers = {}
            for name in ("Content-Type", "Retry-After"):
                if name in answer.headers:
                    headers[name] = answer.headers[name]
            return web.Response(status=answer.status, body=payload, headers=headers)
    except TimeoutError:
        log.warning("notifier did not answer in time", extra={"path": request.path})
        return _unavailable(limits, "the notifier did not answer in time; try again later")
    except aiohttp.ClientError as exc:
        # The exception's class only: its text may carry the notifier's internal address.
        log.warning(
            "notifier unreachable", extra={"path": request.path, "error": type(exc).__name__}
        )
        return _unavailable(limits, "the notifier cannot be reached; try again later")


async def _forwarding_session(app: web.Application) -> AsyncIterator[None]:
    limits = app[LIMITS]
    # One session (one connection pool) for the app's life. No cookie jar: a cookie the notifier
    # set must not travel with the next patient's webhook.
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limits.connections),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=limits.timeout, sock_connect=min(3, limits.timeout)),
    ) as session:
        app[FORWARDER] = session
        yield


def install_twilio_forwarding(app: web.Application, limits: ForwardLimits | None = None) -> None:
    """POST /twilio/sms and /twilio/status go to the notifier (tests may replace app[LIMITS]
    before the app starts)."""
    app[LIMITS] = limits or ForwardLimits()
    app.cleanup_ctx.append(_forwarding_session)
    for path in WEBHOOK_PATHS:
        app.router.add_post(path, forward_to_notifier)
