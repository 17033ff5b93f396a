"""Twilio's webhooks: inbound SMS and message status callbacks, both signature-checked."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from multidict import MultiDict
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from services.notifier import status_callbacks
from services.notifier.metrics import METRICS
from services.notifier.replies import InboundSms, ReplyHandler
from shared.providers.sms import INBOUND_SMS_PATH, STATUS_CALLBACK_PATH
from shared.web import CLOCK, POOL, SETTINGS, problem, request_target

log = logging.getLogger("regimen.notifier.webhooks")

VALIDATOR = web.AppKey("twilio_validator", RequestValidator)
REPLIES = web.AppKey("reply_handler", ReplyHandler)


async def _signed_form(request: web.Request) -> dict[str, str] | None:
    """The POSTed form if its X-Twilio-Signature is valid for the URL Twilio called, else None.

    Twilio signs the URL it called: REGIMEN_TWILIO_CALLBACK_URL (by default the public URL),
    never the address this process listens on, plus the path and query exactly as sent (the raw
    request target: `?n=` is part of what is signed). The booking service forwards /twilio/*
    with the same target, so the same check holds however the request got here."""
    form = await request.post()
    # Every value of a repeated name is signed; a plain dict would keep only the last.
    params = MultiDict((key, str(value)) for key, value in form.items())
    signature = request.headers.get("X-Twilio-Signature", "")
    settings = request.app[SETTINGS]
    validator = request.app[VALIDATOR]
    url = settings.twilio_callback_base + request_target(request)
    if signature and validator.validate(url, params, signature):
        return {key: str(value) for key, value in params.items()}
    if signature and settings.twilio_callback_base != settings.public_url:
        # A common set-up mistake: Twilio's console still points at the public URL.
        if validator.validate(settings.public_url + request_target(request), params, signature):
            log.warning(
                "webhook signed for REGIMEN_PUBLIC_URL, refused: its signature is checked "
                "against REGIMEN_TWILIO_CALLBACK_URL; point Twilio's webhook there",
                extra={"path": request.path},
            )
            return None
    log.warning(
        "webhook refused: missing or invalid X-Twilio-Signature",
        extra={"path": request.path, "signed": bool(signature)},
    )
    return None


def _forbidden() -> web.Response:
    return problem(403, "Forbidden", detail="missing or invalid X-Twilio-Signature")


def _twiml(response: MessagingResponse) -> web.Response:
    return web.Response(text=str(response), content_type="application/xml")


async def inbound_sms(request: web.Request) -> web.Response:
    params = await _signed_form(request)
    if params is None:
        return _forbidden()
    missing = [name for name in ("MessageSid", "From", "To") if not params.get(name)]
    if missing:
        return problem(
            400,
            "Bad Request",
            errors=[{"path": name, "message": "required"} for name in missing],
        )
    sms = InboundSms(
        message_sid=params["MessageSid"],
        from_number=params["From"],
        to_number=params["To"],
        body=params.get("Body", ""),
        opt_out_type=params.get("OptOutType") or None,
    )
    message_id, answer = await request.app[REPLIES].handle(sms)
    log.info("inbound sms", extra={"message_sid": sms.message_sid, "inbound_id": message_id})
    response = MessagingResponse()
    if answer:
        response.message(answer)
    # An empty <Response/> sends nothing back (opt-outs: Twilio answers those itself).
    return _twiml(response)


async def status_callback(request: web.Request) -> web.Response:
    params = await _signed_form(request)
    if params is None:
        return _forbidden()
    missing = [name for name in ("MessageSid", "MessageStatus") if not params.get(name)]
    if missing:
        return problem(
            400,
            "Bad Request",
            errors=[{"path": name, "message": "required"} for name in missing],
        )
    outcome = await status_callbacks.apply_status_callback(
        request.app[POOL],
        message_sid=params["MessageSid"],
        message_status=params["MessageStatus"],
        error_code=status_callbacks.parse_error_code(params.get("ErrorCode")),
        notification_id=status_callbacks.parse_notification_id(request.query.get("n")),
        idempotency_token=request.headers.get("I-Twilio-Idempotency-Token") or None,
        now=request.app[CLOCK].now(),
        metrics=request.app[METRICS],
    )
    log.info(
        "status callback",
        extra={
            "message_sid": params["MessageSid"],
            "status": params["MessageStatus"],
            "error_code": params.get("ErrorCode"),
            "outcome": outcome,
        },
    )
    # Every outcome is an answer Twilio should not retry: duplicates and unknown rows included.
    return web.Response(status=204)


def install_webhooks(app: web.Application) -> None:
    token = app[SETTINGS].twilio_auth_token
    assert token is not None, "the notifier needs REGIMEN_TWILIO_AUTH_TOKEN"
    app[VALIDATOR] = RequestValidator(token)

    async def reply_handler(app: web.Application) -> AsyncIterator[None]:
        app[REPLIES] = ReplyHandler(app[POOL], app[SETTINGS], app[CLOCK], app[METRICS])
        yield

    app.cleanup_ctx.append(reply_handler)
    app.router.add_post(INBOUND_SMS_PATH, inbound_sms)
    app.router.add_post(STATUS_CALLBACK_PATH, status_callback)
