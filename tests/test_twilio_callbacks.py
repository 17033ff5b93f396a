"""Twilio's status callbacks and inbound SMS reach the notifier in a production-shaped set-up:
`regimen serve booking` and `regimen serve notifier` as real processes, the real twilio SDK
against the local stand-in (which posts signed status callbacks), and in front of them what a
load balancer does: the public URL reaches booking, a callback URL of its own (if set) reaches
the notifier."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from twilio.request_validator import RequestValidator

from bench.bench_notify import AUTH_TOKEN, StandIns, _enqueue, _seed
from services.devkit.twilio_standin import StoredMessage
from shared.config import DEV_TWILIO_ACCOUNT_SID, DEV_TWILIO_FROM
from tests.processes import clean_env, free_port, start_regimen

pytestmark = pytest.mark.slow

PUBLIC = "https://clinic.example.test"
CALLBACKS_APART = "https://notify.example.test"
PATIENT = "+447700900777"


@dataclass
class Deployment:
    db: asyncpg.Connection
    stand_ins: StandIns
    env: dict[str, str]
    folder: Path
    booking: str = ""
    booking_metrics: str = ""
    notifier: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    async def start(self, service: str) -> None:
        log = self.folder / f"{service}.log"
        process = start_regimen(["serve", service, "--host", "127.0.0.1"], self.env, log)
        self.processes[service] = process
        url = self.booking if service == "booking" else self.notifier
        async with aiohttp.ClientSession() as http:
            for _ in range(400):
                if process.poll() is not None:
                    break
                try:
                    async with http.get(url + "/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"{service} did not become ready:\n{log.read_text()[-3000:]}")

    async def stop(self, service: str) -> None:
        process = self.processes.pop(service)
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 15)

    def route(self, *, callbacks_apart: bool) -> None:
        """What the load balancer in front does with the URLs Twilio calls."""
        booking, notifier = self.booking, self.notifier

        def route_webhook(url: str) -> str:
            if callbacks_apart and url.startswith(CALLBACKS_APART + "/"):
                return notifier + url[len(CALLBACKS_APART) :]
            if url.startswith(PUBLIC + "/"):
                return booking + url[len(PUBLIC) :]
            raise AssertionError(f"Twilio was given a URL nobody routes: {url}")

        self.stand_ins.twilio.route_webhook = route_webhook

    async def one_sms(self) -> int:
        """Queue reminders for the seeded patients (one SMS, one email); the SMS row's id."""
        await _enqueue(self.db, 1, 1000, "callbacks")
        return int(
            await self.db.fetchval(
                "SELECT id FROM notification "
                "WHERE channel = 'sms' AND dedupe_key LIKE 'callbacks:%'"
            )
        )

    async def row_status(self, notification_id: int) -> str:
        return str(
            await self.db.fetchval("SELECT status FROM notification WHERE id = $1", notification_id)
        )

    async def until(self, check: Callable[[], Awaitable[bool]], what: str) -> None:
        for _ in range(600):  # a bound against hanging, not a timing assertion
            if await check():
                return
            await asyncio.sleep(0.05)
        logs = "\n".join(p.read_text()[-2000:] for p in self.folder.glob("*.log"))
        raise AssertionError(f"{what} not reached\n{logs}")

    async def stored_sms(self) -> StoredMessage:
        async def created() -> bool:
            return len(self.stand_ins.twilio.messages) == 1

        await self.until(created, "the SMS created at Twilio")
        [message] = self.stand_ins.twilio.messages.values()
        return message

    async def booking_requests(self, route: str) -> float:
        """How many requests booking answered on `route` (from its metrics port)."""
        async with aiohttp.ClientSession() as http:
            async with http.get(self.booking_metrics + "/metrics") as response:
                text = await response.text()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("regimen_http_requests_total{") and f'route="{route}"' in line
        )


@pytest.fixture
async def deployment(db_url: str, tmp_path: Path) -> AsyncIterator[Deployment]:
    await _seed(db_url, 2)  # two patients: one gets the SMS, the other the email
    stand_ins = StandIns()
    await stand_ins.start()
    stand_ins.twilio.deliver = True  # Twilio's part: status callbacks sent and delivered
    ports = {name: free_port() for name in ("booking", "metrics", "notifier")}
    env = clean_env(
        DATABASE_URL=db_url,
        REGIMEN_PUBLIC_URL=PUBLIC,
        REGIMEN_SECRET_KEY="s" * 40,
        REGIMEN_TWILIO_ACCOUNT_SID=DEV_TWILIO_ACCOUNT_SID,
        REGIMEN_TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        REGIMEN_TWILIO_FROM=DEV_TWILIO_FROM,
        REGIMEN_TWILIO_API_URL=stand_ins.twilio_url,
        REGIMEN_SMTP_HOST="127.0.0.1",
        REGIMEN_SMTP_PORT=str(stand_ins.smtp_port),
        REGIMEN_EMAIL_FROM="clinic@regimen.test",
        REGIMEN_SMS_SEGMENTS_PER_SECOND="0",
        # Both services read the same settings (one .env); REGIMEN_NOTIFIER_URL is left unset,
        # so booking forwards to the notifier's port on this machine.
        REGIMEN_BOOKING_PORT=str(ports["booking"]),
        REGIMEN_BOOKING_METRICS_PORT=str(ports["metrics"]),
        REGIMEN_NOTIFIER_PORT=str(ports["notifier"]),
    )
    db = await asyncpg.connect(db_url)
    found = Deployment(
        db,
        stand_ins,
        env,
        tmp_path,
        booking=f"http://127.0.0.1:{ports['booking']}",
        booking_metrics=f"http://127.0.0.1:{ports['metrics']}",
        notifier=f"http://127.0.0.1:{ports['notifier']}",
    )
    try:
        yield found
    finally:
        for service in list(found.processes):
            await found.stop(service)
        await db.close()
        await stand_ins.stop()


def _inbound(sid: str) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "AccountSid": DEV_TWILIO_ACCOUNT_SID,
        "From": PATIENT,
        "To": DEV_TWILIO_FROM,
        "Body": "C",
        "NumMedia": "0",
        "SmsStatus": "received",
    }


async def _post(
    url: str, params: dict[str, str], signature: str
) -> tuple[int, str, dict[str, str]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=params, headers={"X-Twilio-Signature": signature}) as r:
            return r.status, await r.text(), dict(r.headers)


async def test_one_public_url_takes_an_sms_to_delivered_through_booking(
    deployment: Deployment,
) -> None:
    # REGIMEN_TWILIO_CALLBACK_URL unset, and the load balancer sends everything to booking.
    await deployment.start("booking")
    await deployment.start("notifier")
    deployment.route(callbacks_apart=False)
    notification_id = await deployment.one_sms()

    async def delivered() -> bool:
        return await deployment.row_status(notification_id) == "delivered"

    await deployment.until(delivered, "the SMS delivered")
    message = await deployment.stored_sms()
    assert message.status_callback == f"{PUBLIC}/twilio/status?n={notification_id}"
    # Both of Twilio's callbacks were accepted, and they went through booking.
    assert message.callbacks_sent == ["sent:204", "delivered:204"]
    assert await deployment.booking_requests("/twilio/status") == 2

    # The inbound SMS webhook in Twilio's console is the public URL too: the TwiML comes back.
    params = _inbound("SM" + "7" * 32)
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC + "/twilio/sms", params)
    status, text, headers = await _post(deployment.booking + "/twilio/sms", params, signature)
    assert (status, headers["Content-Type"]) == (200, "application/xml; charset=utf-8")
    # (from a number no patient has: the inbox's acknowledgement is the answer)
    assert "<Message>" in text and "get back to you" in text


async def test_a_callback_url_of_its_own_takes_callbacks_straight_to_the_notifier(
    deployment: Deployment,
) -> None:
    deployment.env["REGIMEN_TWILIO_CALLBACK_URL"] = CALLBACKS_APART
    await deployment.start("booking")
    await deployment.start("notifier")
    deployment.route(callbacks_apart=True)
    notification_id = await deployment.one_sms()
    message = await deployment.stored_sms()
    assert message.status_callback == f"{CALLBACKS_APART}/twilio/status?n={notification_id}"

    async def delivered() -> bool:
        return await deployment.row_status(notification_id) == "delivered"

    await deployment.until(delivered, "the SMS delivered")
    assert message.callbacks_sent == ["sent:204", "delivered:204"]
    assert await deployment.booking_requests("/twilio/status") == 0


async def test_a_forged_callback_through_booking_is_refused_by_the_notifier(
    deployment: Deployment,
) -> None:
    await deployment.start("booking")
    await deployment.start("notifier")
    deployment.stand_ins.twilio.deliver = False  # the test plays Twilio's callbacks itself
    notification_id = await deployment.one_sms()

    async def sent() -> bool:
        return await deployment.row_status(notification_id) == "sent"

    await deployment.until(sent, "the SMS sent")
    message = await deployment.stored_sms()
    target = f"/twilio/status?n={notification_id}"
    params = {
        "AccountSid": DEV_TWILIO_ACCOUNT_SID,
        "MessageSid": message.sid,
        "MessageStatus": "delivered",
    }
    forged = RequestValidator("not-our-token").compute_signature(PUBLIC + target, params)
    status, text, headers = await _post(deployment.booking + target, params, forged)
    # The notifier's own refusal, passed through by booking.
    assert status == 403
    assert headers["Content-Type"].startswith("application/problem+json")
    assert "X-Twilio-Signature" in text
    assert await deployment.row_status(notification_id) == "sent"
    # Signed for the URL Twilio calls, the same callback is applied.
    genuine = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC + target, params)
    assert (await _post(deployment.booking + target, params, genuine))[0] == 204
    assert await deployment.row_status(notification_id) == "delivered"


async def test_with_the_notifier_down_booking_answers_503_and_a_retry_gets_through(
    deployment: Deployment,
) -> None:
    await deployment.start("booking")
    await deployment.start("notifier")
    await deployment.stop("notifier")
    params = _inbound("SM" + "8" * 32)
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC + "/twilio/sms", params)
    status, text, headers = await _post(deployment.booking + "/twilio/sms", params, signature)
    assert status == 503
    assert int(headers["Retry-After"]) > 0
    assert headers["Content-Type"].startswith("application/problem+json")
    assert "Traceback" not in text
    async with aiohttp.ClientSession() as http:
        async with http.get(deployment.booking + "/readyz") as response:
            assert response.status == 200  # booking itself stays up
    # Twilio retries the same webhook once the notifier is back: it is stored once.
    await deployment.start("notifier")
    for _ in range(2):
        status, text, _ = await _post(deployment.booking + "/twilio/sms", params, signature)
        assert status == 200, text
    stored = await deployment.db.fetchval(
        "SELECT count(*) FROM inbound_message WHERE from_number = $1", PATIENT
    )
    assert stored == 1
