"""A local stand-in of Twilio's Messages API, for `regimen dev` and the tests.

It accepts the real SDK's requests (Basic auth, form bodies), answers with Twilio-shaped JSON and
error bodies, and sends signed status callbacks, so our code runs unchanged against it. Tests
queue faults (HTTP errors, Twilio error codes, hangs, dropped connections), or have a seeded share
of requests fail at random, to see how the notifier copes; every create request is logged with
what it got.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import secrets
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
from aiohttp import web
from multidict import MultiDictProxy
from twilio.request_validator import RequestValidator

from services.devkit.recorder import Recorder, Sent
from shared.sms_segments import segment_count

log = logging.getLogger("regimen.devkit.twilio")

API_PREFIX = "/2010-04-01/Accounts/{account}"


@dataclass
class Fault:
    """What the next message-create request gets instead of success."""

    status: int = 500
    code: int | None = None
    message: str = "Internal Server Error"
    hang_seconds: float = 0.0  # > 0: wait this long before answering (a timeout)
    create_anyway: bool = False  # the message is created although the caller sees a failure
    # Close the connection instead of answering (after any hang): the caller gets no answer.
    drop_connection: bool = False


@dataclass
class CreateRequest:
    """One message-create request as it arrived, and what became of it."""

    at: datetime
    to: str
    body: str
    fault: Fault | None
    sid: str | None = None  # the message created, if one was
    answered_at: datetime | None = None  # None while the request hangs


@dataclass
class StoredMessage:
    sid: str
    account_sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    status: str
    num_segments: int
    date_created: datetime
    status_callback: str | None
    validity_period: int | None
    error_code: int | None = None
    callbacks_sent: list[str] = field(default_factory=list)

    def to_json(self, prefix: str) -> dict[str, object]:
        stamp = format_datetime(self.date_created, usegmt=True)
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "to": self.to,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "body": self.body,
            "status": self.status,
            "num_segments": str(self.num_segments),
            "num_media": "0",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "price": None,
            "price_unit": "USD",
            "error_code": self.error_code,
            "error_message": None,
            "date_created": stamp,
            "date_updated": stamp,
            "date_sent": stamp if self.status in ("sent", "delivered") else None,
            "uri": f"{prefix}/Messages/{self.sid}.json",
            "subresource_uris": {"media": f"{prefix}/Messages/{self.sid}/Media.json"},
        }


def _twilio_error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status=status,
    )


def _looks_like_e164(number: str) -> bool:
    return number.startswith("+") and number[1:].isdigit() and 8 <= len(number) <= 16


class TwilioStandIn:
    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        recorder: Recorder | None = None,
        route_webhook: Callable[[str], str] = lambda url: url,
        callback_delay: float = 0.02,
        deliver: bool = True,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.recorder = recorder or Recorder()
        # Status callback URLs are public URLs; in dev a "proxy" maps them to the local notifier.
        self.route_webhook = route_webhook
        self.callback_delay = callback_delay
        self.deliver = deliver
        self.messages: dict[str, StoredMessage] = {}
        self.faults: deque[Fault] = deque()
        self.opted_out: set[str] = set()
        self.undeliverable: set[str] = set()
        self.create_requests = 0
        self.requests: list[CreateRequest] = []
        self._random_faults: tuple[float, list[Fault], random.Random] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._validator = RequestValidator(auth_token)

    # -- what tests use -------------------------------------------------------------------------

    def fail_next(self, fault: Fault, times: int = 1) -> None:
        self.faults.extend([fault] * times)

    def fail_at_random(self, probability: float, faults: Sequence[Fault], *, seed: int) -> None:
        """From now on, a create request that finds no queued fault gets one of `faults` with
        this probability, drawn (like the choice among them) from a generator seeded with
        `seed`: the same requests in the same order meet the same faults."""
        if not 0 <= probability <= 1 or not faults:
            raise ValueError("a probability between 0 and 1 and at least one fault")
        self._random_faults = (probability, list(faults), random.Random(seed))

    def stop_failing_at_random(self) -> None:
        self._random_faults = None

    def _next_fault(self) -> Fault | None:
        if self.faults:
            return self.faults.popleft()
        if self._random_faults is not None:
            probability, faults, rng = self._random_faults
            if rng.random() < probability:
                return rng.choice(faults)
        return None

    def sent_to(self, number: str) -> list[StoredMessage]:
        return [m for m in self.messages.values() if m.to == number]

    # -- the HTTP API ---------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application()
        prefix = API_PREFIX
        app.router.add_post(prefix + "/Messages.json", self._create)
        app.router.add_get(prefix + "/Messages.json", self._list)
        app.router.add_get(prefix + "/Messages/{sid}.json", self._fetch)
        app.on_cleanup.append(self._close)
        return app

    def _authorised(self, request: web.Request) -> bool:
        if request.match_info["account"] != self.account_sid:
            return False
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return secrets.compare_digest(user, self.account_sid) and secrets.compare_digest(
            password, self.auth_token
        )

    def _prefix(self) -> str:
        return API_PREFIX.format(account=self.account_sid)

    async def _create(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _twilio_error(401, 20003, "Authenticate")
        self.create_requests += 1
        form = await request.post()
        to = str(form.get("To", ""))
        sender = form.get("From")
        service = form.get("MessagingServiceSid")
        body = str(form.get("Body", ""))
        fault = self._next_fault()
        logged = CreateRequest(datetime.now(UTC), to, body, fault)
        self.requests.append(logged)
        try:
            return await self._answer(request, logged, sender, service, form)
        finally:
            logged.answered_at = datetime.now(UTC)

    async def _answer(
        self,
        request: web.Request,
        logged: CreateRequest,
        sender: object,
        service: object,
        form: MultiDictProxy[Any],
    ) -> web.Response:
        to, body, fault = logged.to, logged.body, logged.fault
        if fault is not None:
            if fault.create_anyway:
                logged.sid = self._store(to, sender, service, body, form).sid
            if fault.hang_seconds:
                await asyncio.sleep(fault.hang_seconds)
            if fault.drop_connection and request.transport is not None:
                # The client sees the server disconnect; the response below goes nowhere.
                request.transport.close()
            return _twilio_error(fault.status, fault.code or fault.status, fault.message)
        if not to:
            return _twilio_error(400, 21604, "A 'To' phone number is required.")
        if not _looks_like_e164(to):
            return _twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not sender and not service:
            return _twilio_error(400, 21603, "A 'From' or 'MessagingServiceSid' is required.")
        if not body:
            return _twilio_error(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return _twilio_error(400, 21617, "The concatenated message body exceeds 1600.")
        if to in self.opted_out:
            return _twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")
        validity = form.get("ValidityPeriod")
        if validity is not None and not (str(validity).isdigit() and 1 <= int(validity) <= 36000):
            return _twilio_error(400, 21623, "ValidityPeriod must be between 1 and 36000.")
        message = self._store(to, sender, service, body, form)
        logged.sid = message.sid
        return web.json_response(message.to_json(self._prefix()), status=201)

    def _store(
        self, to: str, sender: object, service: object, body: str, form: object
    ) -> StoredMessage:
        get = form.get  # type: ignore[attr-defined]
        validity = get("ValidityPeriod")
        message = StoredMessage(
            sid="SM" + secrets.token_hex(16),
            account_sid=self.account_sid,
            to=to,
            from_=str(sender) if sender else None,
            messaging_service_sid=str(service) if service else None,
            body=body,
            status="accepted" if service and not sender else "queued",
            num_segments=segment_count(body),
            date_created=datetime.now(UTC),
            status_callback=str(get("StatusCallback")) if get("StatusCallback") else None,
            validity_period=int(validity) if validity and str(validity).isdigit() else None,
        )
        self.messages[message.sid] = message
        self.recorder.add(
            Sent(
                channel="sms",
                id=message.sid,
                at=message.date_created,
                to=to,
                sender=message.from_ or message.messaging_service_sid or "",
                body=body,
                status=message.status,
            )
        )
        if self.deliver:
            task = asyncio.get_running_loop().create_task(self._progress(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return message

    async def _list(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _twilio_error(401, 20003, "Authenticate")
        to = request.query.get("To")
        sender = request.query.get("From")
        try:
            page_size = min(1000, max(1, int(request.query.get("PageSize", "50"))))
        except ValueError:
            return _twilio_error(400, 20001, "PageSize must be a number")
        found = [
            m
            for m in sorted(self.messages.values(), key=lambda m: m.date_created, reverse=True)
            if (to is None or m.to == to) and (sender is None or m.from_ == sender)
        ][:page_size]
        uri = f"{self._prefix()}/Messages.json"
        return web.json_response(
            {
                "messages": [m.to_json(self._prefix()) for m in found],
                "first_page_uri": uri,
                "next_page_uri": None,
                "previous_page_uri": None,
                "page": 0,
                "page_size": page_size,
                "start": 0,
                "end": max(0, len(found) - 1),
                "uri": uri,
            }
        )

    async def _fetch(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _twilio_error(401, 20003, "Authenticate")
        message = self.messages.get(request.match_info["sid"])
        if message is None:
            return _twilio_error(404, 20404, "The requested resource was not found")
        return web.json_response(message.to_json(self._prefix()))

    # -- delivery and status callbacks ----------------------------------------------------------

    async def _progress(self, message: StoredMessage) -> None:
        steps = (
            ["sent", "undelivered"] if message.to in self.undeliverable else ["sent", "delivered"]
        )
        for status in steps:
            await asyncio.sleep(self.callback_delay)
            message.status = status
            if status == "undelivered":
                message.error_code = 30003
            self.recorder.update_status(message.sid, status)
            if message.status_callback:
                await self._callback(message)

    async def _callback(self, message: StoredMessage) -> None:
        params = {
            "AccountSid": message.account_sid,
            "From": message.from_ or "",
            "MessageSid": message.sid,
            "SmsSid": message.sid,
            "MessageStatus": message.status,
            "SmsStatus": message.status,
            "To": message.to,
            "ApiVersion": "2010-04-01",
        }
        if message.error_code:
            params["ErrorCode"] = str(message.error_code)
        assert message.status_callback is not None
        signature = self._validator.compute_signature(message.status_callback, params)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {
            "X-Twilio-Signature": signature,
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        }
        try:
            async with self._session.post(
                self.route_webhook(message.status_callback),
                data=params,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=15),
            ) as response:
                message.callbacks_sent.append(f"{message.status}:{response.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Real Twilio retries at most a little and then gives up; so do we.
            message.callbacks_sent.append(f"{message.status}:error")
            log.warning("status callback failed", extra={"error": str(exc)})

    async def _close(self, _app: web.Application) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
