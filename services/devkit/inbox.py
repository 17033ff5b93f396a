"""The dev inbox: every SMS and email the stand-ins received, newest first, a box to reply to any
SMS as that patient (delivered to the notifier as a correctly signed Twilio webhook), and a
control that moves the dev clock forward for every service at once."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree

import aiohttp
from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape
from twilio.request_validator import RequestValidator

from services.devkit.recorder import Recorder, Sent
from services.devkit.twilio_standin import TwilioStandIn
from shared.clock import OffsetClock
from shared.sms_segments import segment_count

OPT_OUT_WORDS = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
OPT_IN_WORDS = {"START", "UNSTOP"}
HELP_WORDS = {"HELP", "INFO"}
# What Twilio's Advanced Opt-Out answers to STOP by default.
TWILIO_STOP_ANSWER = (
    "You have successfully been unsubscribed. You will not receive any more messages from this "
    "number. Reply START to resubscribe."
)


def twiml_messages(answer: str) -> list[str]:
    """The texts of the <Message> elements of a TwiML answer (none if it is not TwiML)."""
    try:
        root = ElementTree.fromstring(answer)
    except ElementTree.ParseError:
        return []
    return [(m.text or "").strip() for m in root.iter("Message") if (m.text or "").strip()]


class DevInbox:
    def __init__(
        self,
        *,
        recorder: Recorder,
        clock: OffsetClock,
        account_sid: str,
        auth_token: str,
        sender: str,
        inbound_url: str,
        route: Callable[[str], str] = lambda url: url,
        on_clock_change: Callable[[timedelta], None] = lambda _offset: None,
        standin: TwilioStandIn | None = None,
    ) -> None:
        self.recorder = recorder
        self.standin = standin
        self.clock = clock
        self.account_sid = account_sid
        self.sender = sender
        # The URL Twilio calls (and signs) for an inbound SMS, and where that URL leads here.
        self.inbound_url = inbound_url
        self.route = route
        self.on_clock_change = on_clock_change
        self.validator = RequestValidator(auth_token)
        self.templates = Environment(
            loader=PackageLoader("services.devkit", "templates"),
            autoescape=select_autoescape(["html"]),
        )

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[_same_origin_posts])
        app.router.add_get("/", self.page)
        app.router.add_get("/api/messages", self.messages_json)
        app.router.add_get("/email/{id}/html", self.email_html)
        app.router.add_post("/reply", self.reply)
        app.router.add_post("/clock", self.move_clock)
        return app

    async def page(self, request: web.Request) -> web.Response:
        html = self.templates.get_template("inbox.html").render(
            items=self.recorder.items(),
            now=self.clock.now(),
            offset=self.clock.offset,
            notice=request.query.get("notice", ""),
        )
        return web.Response(text=html, content_type="text/html")

    async def messages_json(self, request: web.Request) -> web.Response:
        return web.json_response([i.to_json() for i in self.recorder.items()])

    async def email_html(self, request: web.Request) -> web.Response:
        for item in self.recorder.items("email"):
            if item.id == request.match_info["id"] and item.html:
                # The mail's HTML may carry anything; it gets no script and no network.
                return web.Response(
                    text=item.html,
                    content_type="text/html",
                    headers={
                        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"
                    },
                )
        raise web.HTTPNotFound()

    async def reply(self, request: web.Request) -> web.Response:
        form = await request.post()
        patient = str(form.get("from", "")).strip()
        body = str(form.get("body", "")).strip()
        if not patient or not body:
            raise web.HTTPSeeOther("/?notice=Type+a+reply+first")
        status = await self.send_reply(patient, body)
        raise web.HTTPSeeOther(f"/?notice=Reply+delivered+to+the+notifier+(HTTP+{status})")

    async def send_reply(self, patient: str, body: str) -> int:
        """Deliver `body` from `patient` to the inbound SMS webhook as Twilio would (signed for
        the URL Twilio calls, posted where that URL leads); return the HTTP status."""
        sid = "SM" + secrets.token_hex(16)
        params = {
            "MessageSid": sid,
            "SmsSid": sid,
            "SmsMessageSid": sid,
            "AccountSid": self.account_sid,
            "From": patient,
            "To": self.sender,
            "Body": body,
            "NumMedia": "0",
            "NumSegments": str(segment_count(body)),
            "SmsStatus": "received",
            "ApiVersion": "2010-04-01",
        }
        keyword = body.strip(" .!").upper()
        # Twilio's Advanced Opt-Out tags these words before forwarding them.
        if keyword in OPT_OUT_WORDS:
            params["OptOutType"] = "STOP"
        elif keyword in OPT_IN_WORDS:
            params["OptOutType"] = "START"
        elif keyword in HELP_WORDS:
            params["OptOutType"] = "HELP"
        signature = self.validator.compute_signature(self.inbound_url, params)
        self.recorder.add(
            Sent(
                channel="sms",
                id=sid,
                at=datetime.now(UTC),
                to=self.sender,
                sender=patient,
                body=body,
                status="received",
                direction="inbound",
            )
        )
        async with aiohttp.ClientSession() as session:
            async with session.post(
                self.route(self.inbound_url),
                data=params,
                headers={"X-Twilio-Signature": signature},
                timeout=aiohttp.ClientTimeout(total=15),
            ) as response:
                answer = await response.text()
                status = response.status
        # Twilio sends the <Message> of the webhook's TwiML answer back to the patient, and for
        # its default opt-out and opt-in words answers with its own text and (un)blocks the
        # number: the dev inbox shows both, and the stand-in refuses sends to opted-out numbers.
        texts = twiml_messages(answer) if status == 200 else []
        if params.get("OptOutType") == "STOP":
            if self.standin is not None:
                self.standin.opted_out.add(patient)
            texts.insert(0, TWILIO_STOP_ANSWER)
        elif params.get("OptOutType") == "START" and self.standin is not None:
            self.standin.opted_out.discard(patient)
        for text in texts:
            self.recorder.add(
                Sent(
                    channel="sms",
                    id="SM" + secrets.token_hex(16),
                    at=datetime.now(UTC),
                    to=patient,
                    sender=self.sender,
                    body=text,
                    status="delivered",
                )
            )
        return status

    async def move_clock(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            amount = float(str(form.get("amount", "0")))
        except ValueError:
            raise web.HTTPSeeOther("/?notice=The+amount+must+be+a+number") from None
        unit = str(form.get("unit", "hours"))
        if unit not in ("minutes", "hours", "days") or not 0 < amount <= 400:
            raise web.HTTPSeeOther("/?notice=Move+forward+by+0-400+minutes,+hours+or+days")
        self.clock.advance(timedelta(**{unit: amount}))
        self.on_clock_change(self.clock.offset)
        raise web.HTTPSeeOther("/?notice=Dev+clock+moved+forward")


@web.middleware
async def _same_origin_posts(request: web.Request, handler: Callable) -> web.StreamResponse:
    # Another page open in the same browser must not be able to move the clock or send replies.
    if request.method == "POST":
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise web.HTTPForbidden(text="cross-origin request refused")
    return await handler(request)
