"""SMS through the real `twilio` SDK's async client.

The SDK's own async HTTP client has no way to change the API host, ignores its timeout, retries
POSTs on 5xx when retries are on (a duplicate-SMS risk), and logs patients' numbers. Our subclass
replaces its `request()`, the last step before the network, to fix all four.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from shared.config import Settings
from shared.providers.redaction import without_addresses

FailureKind = Literal["temporary", "permanent", "ambiguous"]

# The notifier's webhook paths (fixed by the contract); the booking service forwards both.
STATUS_CALLBACK_PATH = "/twilio/status"
INBOUND_SMS_PATH = "/twilio/sms"
WEBHOOK_PATHS = (STATUS_CALLBACK_PATH, INBOUND_SMS_PATH)


def status_callback_url(settings: Settings, notification_id: int) -> str:
    """The StatusCallback given to Twilio for one notification. Twilio signs this URL exactly as
    given, and the notifier checks it against REGIMEN_TWILIO_CALLBACK_URL plus the path and query
    it was called at; `n` finds the row even before Twilio's answer (its MessageSid) is stored."""
    return f"{settings.twilio_callback_base}{STATUS_CALLBACK_PATH}?n={int(notification_id)}"


def inbound_sms_url(settings: Settings) -> str:
    """What goes into Twilio's console as the number's "A message comes in" webhook."""
    return settings.twilio_callback_base + INBOUND_SMS_PATH


# Twilio error codes that no retry can fix.
PERMANENT_CODES = {21211, 21408, 21610, 21612, 21614, 21606, 21602, 21604, 21617}
OPTED_OUT_CODE = 21610


class SmsError(Exception):
    """A send that did not succeed, classified so the caller knows whether to retry."""

    def __init__(
        self, kind: FailureKind, reason: str, *, code: int | None = None, status: int | None = None
    ) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.code = code
        self.status = status


@dataclass(frozen=True)
class SentSms:
    sid: str
    status: str
    segments: int | None
    error_code: int | None = None
    date_created: datetime | None = None
    body: str = ""  # as Twilio stored it (reconciliation matches it by hash)


class RegimenTwilioHttpClient(AsyncHttpClient):  # type: ignore[misc]  # twilio ships no types
    """Sends the SDK's requests to `api_base` with a real timeout and no retries or logging."""

    def __init__(self, api_base: str, timeout: float) -> None:
        super().__init__(logger=None, is_async=True, timeout=timeout)
        self.api_base = api_base.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def _rewrite(self, url: str) -> str:
        parts = urlsplit(url)
        if not (parts.hostname or "").endswith("twilio.com"):
            raise ValueError("refusing to send Twilio credentials to a non-Twilio host")
        rest = parts.path + (f"?{parts.query}" if parts.query else "")
        return self.api_base + rest

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the SDK calls us with this signature
        allow_redirects: bool = False,
    ) -> Response:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        request_headers = dict(headers or {})
        if auth is not None:
            credentials = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            request_headers["Authorization"] = f"Basic {credentials}"
        async with self._session.request(
            method.upper(),
            self._rewrite(url),
            params=params,  # type: ignore[arg-type]
            data=data,
            headers=request_headers,
            timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            allow_redirects=allow_redirects,
        ) as response:
            return Response(response.status, await response.text(), response.headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def classify_rest_error(error: TwilioRestException) -> SmsError:
    code = error.code if isinstance(error.code, int) else None
    reason = f"Twilio {code or error.status}: {without_addresses(str(error.msg))}"
    if error.status == 429 or code == 20429:
        return SmsError("temporary", reason, code=code, status=error.status)
    if error.status >= 500:
        # Twilio answered with an error, so no message was created: safe to retry.
        return SmsError("temporary", reason, code=code, status=error.status)
    return SmsError("permanent", reason, code=code, status=error.status)


class SmsClient:
    """One per process; must be created inside the running event loop (the SDK requires it)."""

    def __init__(self, settings: Settings) -> None:
        if not settings.twilio_account_sid or not settings.twilio_auth_token:
            raise ValueError("Twilio credentials are not configured")
        self.settings = settings
        self.http = RegimenTwilioHttpClient(settings.twilio_api_url, settings.twilio_timeout)
        self.client = Client(
            settings.twilio_account_sid, settings.twilio_auth_token, http_client=self.http
        )

    async def send(
        self,
        to: str,
        body: str,
        *,
        status_callback: str | None = None,
        validity_period: int | None = None,
    ) -> SentSms:
        sender: dict[str, str] = {}
        if self.settings.twilio_messaging_service_sid:
            sender["messaging_service_sid"] = self.settings.twilio_messaging_service_sid
        else:
            assert self.settings.twilio_from is not None
            sender["from_"] = self.settings.twilio_from
        optional: dict[str, object] = {}
        if status_callback:
            optional["status_callback"] = status_callback
        if validity_period is not None:
            optional["validity_period"] = max(1, min(36000, validity_period))
        try:
            message = await self.client.messages.create_async(
                to=to, body=body, **sender, **optional
            )
        except TwilioRestException as exc:
            raise classify_rest_error(exc) from exc
        except aiohttp.ClientConnectorError as exc:
            # Nothing reached Twilio: the connection itself failed.
            raise SmsError("temporary", f"cannot connect to Twilio: {exc.os_error}") from exc
        except TimeoutError as exc:
            raise SmsError("ambiguous", "timed out waiting for Twilio's answer") from exc
        except (aiohttp.ClientError, TwilioException) as exc:
            raise SmsError(
                "ambiguous", f"Twilio request failed mid-way: {without_addresses(str(exc))}"
            ) from exc
        return _sent(message)

    async def fetch(self, sid: str) -> SentSms:
        message = await self.client.messages(sid).fetch_async()
        return _sent(message)

    async def list_to(self, to: str, *, limit: int = 20) -> list[SentSms]:
        messages = await self.client.messages.list_async(to=to, limit=limit)
        return [_sent(m) for m in messages]

    async def close(self) -> None:
        await self.http.close()


def _sent(message: object) -> SentSms:
    segments = getattr(message, "num_segments", None)
    return SentSms(
        sid=message.sid,  # type: ignore[attr-defined]
        status=message.status,  # type: ignore[attr-defined]
        segments=int(str(segments)) if segments not in (None, "") else None,
        error_code=getattr(message, "error_code", None),
        date_created=getattr(message, "date_created", None),
        body=getattr(message, "body", None) or "",
    )
