"""Twilio's status callbacks at /twilio/status: signed or refused, duplicates ignored, status
only moving forward, delivery failures recorded with their code."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from shared.config import Settings
from tests.conftest import StandIn
from tests.notifier.conftest import MOBILE, Notifier, StartNotifier, World

TOKEN = "test-auth-token"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Callbacks:
    def __init__(self, http: aiohttp.ClientSession, notifier: Notifier, settings: Settings):
        self.http = http
        self.notifier = notifier
        self.public = settings.twilio_callback_base  # the URL Twilio signs

    async def post(
        self,
        params: dict[str, str],
        *,
        n: int | str | None = None,
        token: str | None = None,
        signed: bool = True,
    ) -> int:
        path = "/twilio/status" + (f"?n={n}" if n is not None else "")
        headers = {"I-Twilio-Idempotency-Token": token or secrets.token_hex(8)}
        if signed:
            signature = RequestValidator(TOKEN).compute_signature(self.public + path, params)
            headers["X-Twilio-Signature"] = signature
        async with self.http.post(
            self.notifier.base + path, data=params, headers=headers
        ) as response:
            return response.status


def status(sid: str, value: str, error_code: int | None = None) -> dict[str, str]:
    params = {
        "AccountSid": "AC" + "0" * 31 + "1",
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": value,
        "To": MOBILE,
        "ApiVersion": "2010-04-01",
    }
    if error_code is not None:
        params["ErrorCode"] = str(error_code)
    return params


@pytest.fixture
async def sent(
    world: World,
    start_notifier: StartNotifier,
    twilio: StandIn,
    http: aiohttp.ClientSession,
    settings: Settings,
) -> tuple[Callbacks, int, str]:
    """A message sent and accepted by Twilio, whose callbacks the test sends itself."""
    twilio.twilio.deliver = False
    notifier = await start_notifier()
    notification_id = await world.reply("Hello")
    row = await world.settled(notification_id, "sent")
    assert row.provider_id is not None
    return Callbacks(http, notifier, settings), notification_id, row.provider_id


async def test_an_unsigned_or_forged_callback_is_refused(
    world: World, sent: tuple[Callbacks, int, str]
) -> None:
    callbacks, notification_id, sid = sent
    assert await callbacks.post(status(sid, "delivered"), n=notification_id, signed=False) == 403
    forged = status(sid, "delivered")
    path = f"/twilio/status?n={notification_id}"
    signature = RequestValidator("not-our-token").compute_signature(callbacks.public + path, forged)
    async with callbacks.http.post(
        callbacks.notifier.base + path, data=forged, headers={"X-Twilio-Signature": signature}
    ) as response:
        assert response.status == 403
    assert (await world.row(notification_id)).status == "sent"


async def test_status_moves_forward_only_and_duplicates_are_ignored(
    world: World, sent: tuple[Callbacks, int, str]
) -> None:
    callbacks, notification_id, sid = sent
    assert await callbacks.post(status(sid, "delivered"), n=notification_id, token="t1") == 204
    row = await world.row(notification_id)
    assert row.status == "delivered" and row.delivered_at is not None
    events = len(await world.reasons(notification_id))

    # The same callback again (a retry with the same token) changes nothing, even if its body
    # said otherwise; a late `sent` never overwrites `delivered`; neither does a later failure.
    assert (
        await callbacks.post(status(sid, "undelivered", 30003), n=notification_id, token="t1")
        == 204
    )
    assert await callbacks.post(status(sid, "sent"), n=notification_id, token="t2") == 204
    assert await callbacks.post(status(sid, "failed", 30008), token="t3") == 204
    row = await world.row(notification_id)
    assert row.status == "delivered" and row.error_code is None
    assert len(await world.reasons(notification_id)) == events


async def test_a_delivery_failure_is_recorded_with_its_code(
    world: World, sent: tuple[Callbacks, int, str]
) -> None:
    callbacks, notification_id, sid = sent
    # Found by its MessageSid alone (no `n` in the URL).
    assert await callbacks.post(status(sid, "undelivered", 30003)) == 204
    row = await world.row(notification_id)
    assert row.status == "undelivered" and row.error_code == 30003
    assert row.status_reason == "Twilio reports undelivered (error 30003)"
    async with callbacks.http.get(callbacks.notifier.base + "/metrics") as response:
        text = await response.text()
    assert (
        'regimen_notification_failures_total{channel="sms",code="30003",stage="delivery"} 1.0'
        in text
    )


async def test_bad_and_unknown_callbacks_get_no_500(
    world: World, sent: tuple[Callbacks, int, str]
) -> None:
    callbacks, notification_id, sid = sent
    missing = status(sid, "delivered")
    del missing["MessageStatus"]
    assert await callbacks.post(missing, n=notification_id) == 400
    assert await callbacks.post(status("SM" + "f" * 32, "delivered"), n=999999) == 204
    assert await callbacks.post(status("SM" + "f" * 32, "delivered")) == 204
    # A callback about a different message than the row's is not applied to the row.
    assert await callbacks.post(status("SM" + "e" * 32, "failed", 30007), n=notification_id) == 204
    # Hand-made values: an id that is no number or past bigint, an error code that is no
    # number, a status Twilio may add later. None of them is a 500 or changes the row.
    for n in ("abc", "9" * 30, "-1"):
        assert await callbacks.post(status("SM" + "d" * 32, "delivered"), n=n) == 204
    assert await callbacks.post(status(sid, "read"), n=notification_id) == 204
    assert (await world.row(notification_id)).status == "sent"
    # An unreadable error code is dropped; the status itself still counts.
    assert await callbacks.post({**status(sid, "undelivered"), "ErrorCode": "abc"}) == 204
    row = await world.row(notification_id)
    assert row.status == "undelivered" and row.error_code is None
