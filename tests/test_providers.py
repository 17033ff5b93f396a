"""SMS through the real twilio SDK to the stand-in, email through aiosmtplib to aiosmtpd, and the
notifier's signed webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest
import trustme
import yarl
from twilio.request_validator import RequestValidator

from services.devkit.recorder import Recorder
from services.devkit.smtp_sink import RecordingHandler, start_smtp_server
from services.devkit.twilio_standin import Fault
from services.notifier.app import create_app as create_notifier
from shared.clock import FrozenClock
from shared.config import Settings
from shared.db.pool import create_pool
from shared.providers.email import EmailClient, EmailError, build_message, send_once
from shared.providers.sms import SmsClient, SmsError
from tests.conftest import SmtpSink, StandIn, serve_app

PATIENT = "+447700900123"


@pytest.fixture
async def sms(settings: Settings) -> AsyncIterator[SmsClient]:
    client = SmsClient(settings)
    yield client
    await client.close()


async def test_sms_goes_through_the_sdk_to_the_stand_in(sms: SmsClient, twilio: StandIn) -> None:
    sent = await sms.send(
        PATIENT, "Your appointment is on Tue 3 Mar at 10:00.", validity_period=600
    )
    assert sent.sid.startswith("SM") and sent.status == "queued" and sent.segments == 1
    [stored] = twilio.twilio.sent_to(PATIENT)
    assert stored.sid == sent.sid
    assert stored.from_ == "+15005550006"
    assert stored.validity_period == 600
    assert (await sms.fetch(sent.sid)).sid == sent.sid
    assert [m.sid for m in await sms.list_to(PATIENT)] == [sent.sid]


async def test_long_unicode_sms_counts_ucs2_segments(sms: SmsClient) -> None:
    sent = await sms.send(PATIENT, "Réservation confirmée ✅ " * 5)
    assert sent.segments == 2


@pytest.mark.parametrize(
    ("fault", "kind", "code"),
    [
        (Fault(status=400, code=21211, message="invalid number"), "permanent", 21211),
        (Fault(status=400, code=21610, message="unsubscribed"), "permanent", 21610),
        (Fault(status=429, code=20429, message="Too Many Requests"), "temporary", 20429),
        (Fault(status=500, code=20500, message="Internal error"), "temporary", 20500),
    ],
)
async def test_twilio_errors_are_classified(
    sms: SmsClient, twilio: StandIn, fault: Fault, kind: str, code: int
) -> None:
    twilio.twilio.fail_next(fault)
    with pytest.raises(SmsError) as caught:
        await sms.send(PATIENT, "hello")
    assert caught.value.kind == kind
    assert caught.value.code == code
    assert twilio.twilio.sent_to(PATIENT) == []


async def test_a_hanging_twilio_is_abandoned_after_the_timeout_as_ambiguous(
    settings: Settings, twilio: StandIn
) -> None:
    client = SmsClient(settings.with_overrides(twilio_timeout=0.3))
    twilio.twilio.fail_next(Fault(hang_seconds=3, create_anyway=True))
    try:
        with pytest.raises(SmsError) as caught:
            await client.send(PATIENT, "hello")
    finally:
        await client.close()
    # The request left and Twilio may have sent it: the caller must reconcile, not resend.
    assert caught.value.kind == "ambiguous"
    assert len(twilio.twilio.sent_to(PATIENT)) == 1


async def test_a_connection_dropped_after_the_message_was_created_is_ambiguous(
    sms: SmsClient, twilio: StandIn
) -> None:
    twilio.twilio.fail_next(Fault(drop_connection=True, create_anyway=True))
    with pytest.raises(SmsError) as caught:
        await sms.send(PATIENT, "hello")
    assert caught.value.kind == "ambiguous"
    [stored] = twilio.twilio.sent_to(PATIENT)
    [request] = twilio.twilio.requests
    assert request.sid == stored.sid and request.answered_at is not None


async def test_random_faults_repeat_for_the_same_seed(settings: Settings, twilio: StandIn) -> None:
    """The stand-in's seeded fault mode: a share of requests fails, the same ones every run."""
    lost = Fault(status=500, code=20500, message="Internal error")

    async def pattern() -> list[bool]:
        twilio.twilio.requests.clear()
        twilio.twilio.fail_at_random(1 / 3, [lost], seed=11)
        client = SmsClient(settings)
        try:
            for n in range(30):
                with contextlib.suppress(SmsError):
                    await client.send(PATIENT, f"message {n}")
        finally:
            await client.close()
        return [r.fault is not None for r in twilio.twilio.requests]

    first = await pattern()
    assert 3 <= sum(first) <= 20  # some failed, most did not
    assert await pattern() == first
    twilio.twilio.stop_failing_at_random()
    client = SmsClient(settings)
    try:
        for n in range(10):
            await client.send(PATIENT, f"after {n}")  # raises if a fault were still drawn
    finally:
        await client.close()


async def test_no_sdk_retries_on_5xx(sms: SmsClient, twilio: StandIn) -> None:
    twilio.twilio.fail_next(Fault(status=503, code=20503, message="unavailable"))
    with pytest.raises(SmsError):
        await sms.send(PATIENT, "hello")
    assert twilio.twilio.create_requests == 1


async def test_refused_connection_is_temporary(settings: Settings) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    client = SmsClient(settings.with_overrides(twilio_api_url=f"http://127.0.0.1:{closed_port}"))
    try:
        with pytest.raises(SmsError) as caught:
            await client.send(PATIENT, "hello")
    finally:
        await client.close()
    assert caught.value.kind == "temporary"


async def test_wrong_credentials_are_refused_by_the_stand_in(
    settings: Settings, twilio: StandIn
) -> None:
    client = SmsClient(settings.with_overrides(twilio_auth_token="wrong"))
    try:
        with pytest.raises(SmsError) as caught:
            await client.send(PATIENT, "hello")
    finally:
        await client.close()
    assert caught.value.kind == "permanent" and caught.value.code == 20003


async def test_email_goes_through_aiosmtplib_to_aiosmtpd(
    settings: Settings, smtp: SmtpSink
) -> None:
    message = build_message(
        sender="clinic@regimen.test",
        to="patient@example.com",
        subject="Your booking",
        text="See you on Tuesday.",
        html="<p>See you on <b>Tuesday</b>.</p>",
    )
    message_id = await send_once(EmailClient(settings), message)
    [received] = smtp.recorder.emails_to("patient@example.com")
    assert received.id == message_id
    assert received.subject == "Your booking"
    assert received.body.strip() == "See you on Tuesday."
    assert received.html is not None and "<b>Tuesday</b>" in received.html


async def test_smtp_down_is_temporary_and_a_5xx_is_permanent(settings: Settings) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    message = build_message(sender="c@regimen.test", to="p@example.com", subject="s", text="t")
    with pytest.raises(EmailError) as down:
        await send_once(EmailClient(settings.with_overrides(smtp_port=closed_port)), message)
    assert down.value.kind == "temporary"

    class Refusing(RecordingHandler):
        async def handle_RCPT(self, *_args: object) -> str:  # aiosmtpd hook
            return "550 5.1.1 mailbox unavailable"

    server = await start_smtp_server(Refusing(Recorder()))
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(EmailError) as refused:
            await send_once(EmailClient(settings.with_overrides(smtp_port=port)), message)
    finally:
        server.close()
    assert refused.value.kind == "permanent" and refused.value.code == 550


async def test_starttls_with_a_trusted_certificate(settings: Settings) -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    handler = RecordingHandler(Recorder())
    server = await start_smtp_server(handler, tls_context=server_context, require_starttls=True)
    port = server.sockets[0].getsockname()[1]
    message = build_message(sender="c@regimen.test", to="p@example.com", subject="s", text="t")
    try:
        starttls = settings.with_overrides(smtp_port=port, smtp_tls="starttls")
        await send_once(EmailClient(starttls, tls_context=client_context), message)
        assert len(handler.messages) == 1
        # Without trusting the CA the certificate is refused, and that is not a crash.
        with pytest.raises(EmailError) as untrusted:
            await send_once(EmailClient(starttls), message)
        assert "certificate" in untrusted.value.reason.lower()
        # Plain SMTP to a server that requires STARTTLS is refused.
        with pytest.raises(EmailError):
            await send_once(EmailClient(settings.with_overrides(smtp_port=port)), message)
    finally:
        server.close()


# -- the notifier's webhooks ---------------------------------------------------------------------


@pytest.fixture
async def notifier(settings: Settings, clock: FrozenClock, db_url: str) -> AsyncIterator[str]:
    runner, base = await serve_app(create_notifier(settings, clock, db_url))
    yield base
    await runner.cleanup()


def _inbound(sid: str, body: str = "C") -> dict[str, str]:
    return {
        "MessageSid": sid,
        "AccountSid": "AC" + "0" * 31 + "1",
        "From": PATIENT,
        "To": "+15005550006",
        "Body": body,
        "NumMedia": "0",
        "SmsStatus": "received",
    }


async def test_inbound_sms_needs_a_valid_signature(
    settings: Settings, notifier: str, db_url: str
) -> None:
    public = settings.public_url + "/twilio/sms"
    params = _inbound("SM" + "1" * 32)
    good = RequestValidator("test-auth-token").compute_signature(public, params)
    forged = RequestValidator("not-our-token").compute_signature(public, params)
    async with aiohttp.ClientSession() as http:
        async with http.post(notifier + "/twilio/sms", data=params) as response:
            assert response.status == 403
        async with http.post(
            notifier + "/twilio/sms", data=params, headers={"X-Twilio-Signature": forged}
        ) as response:
            assert response.status == 403
        tampered = {**params, "Body": "X"}
        async with http.post(
            notifier + "/twilio/sms", data=tampered, headers={"X-Twilio-Signature": good}
        ) as response:
            assert response.status == 403
        answers = []
        for _ in range(2):  # Twilio may deliver the same webhook twice
            async with http.post(
                notifier + "/twilio/sms", data=params, headers={"X-Twilio-Signature": good}
            ) as response:
                assert response.status == 200
                assert response.content_type == "application/xml"
                answers.append(await response.text())
        # (no clinic is set up in this database: stored for staff, nobody to answer for)
        assert answers[0] == answers[1] and "<Response />" in answers[0]
    pool = await create_pool(db_url)
    try:
        assert await pool.fetchval("SELECT count(*) FROM inbound_message") == 1
    finally:
        await pool.close()


async def test_an_inbound_sms_without_its_fields_is_a_400_naming_them(
    settings: Settings, notifier: str
) -> None:
    public = settings.public_url + "/twilio/sms"
    params = {**_inbound("SM" + "2" * 32), "From": ""}
    del params["MessageSid"]
    signature = RequestValidator("test-auth-token").compute_signature(public, params)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            notifier + "/twilio/sms", data=params, headers={"X-Twilio-Signature": signature}
        ) as response:
            assert response.status == 400
            body = await response.json()
    assert [e["path"] for e in body["errors"]] == ["MessageSid", "From"]


async def test_status_callbacks_from_the_stand_in_are_signed_and_accepted(
    settings: Settings, notifier: str, twilio: StandIn, sms: SmsClient
) -> None:
    twilio.twilio.route_webhook = lambda url: url.replace(settings.public_url, notifier)
    await sms.send(PATIENT, "hello", status_callback=settings.public_url + "/twilio/status?n=7")
    [stored] = twilio.twilio.sent_to(PATIENT)
    for _ in range(100):
        if len(stored.callbacks_sent) == 2:
            break
        await asyncio.sleep(0.02)
    assert stored.callbacks_sent == ["sent:204", "delivered:204"]


async def test_email_connections_are_reused_and_closed(settings: Settings) -> None:
    class CountingSessions(RecordingHandler):
        sessions = 0

        async def handle_EHLO(self, server, session, envelope, hostname, responses):
            CountingSessions.sessions += 1
            session.host_name = hostname
            return responses

    handler = CountingSessions(Recorder())
    server = await start_smtp_server(handler)
    port = server.sockets[0].getsockname()[1]
    try:
        async with EmailClient(settings.with_overrides(smtp_port=port)) as client:
            for n in range(5):
                await client.send(
                    build_message(
                        sender="c@regimen.test", to=f"p{n}@example.com", subject="s", text="t"
                    )
                )
        assert len(handler.messages) == 5
        assert CountingSessions.sessions == 1  # one SMTP session carried all five
    finally:
        server.close()


async def test_email_names_and_domains_outside_ascii_and_no_header_injection(
    settings: Settings, smtp: SmtpSink
) -> None:
    message = build_message(
        sender="Clinique Zoé <clinic@regimen.test>",
        to="Anna Müller <anna@müller.de>",
        subject="Votre rendez-vous\r\nBcc: intruder@example.com",
        text="À mardi.",
        message_id="<notification-1.regimen@regimen.test>",
    )
    await send_once(EmailClient(settings), message)
    [received] = smtp.recorder.emails_to("anna@xn--mller-kva.de")  # the domain in IDNA form
    assert received.id == "<notification-1.regimen@regimen.test>"
    assert received.subject == "Votre rendez-vous Bcc: intruder@example.com"  # still one header
    assert received.body.strip() == "À mardi."
    parsed = smtp.handler.messages[-1]
    assert parsed["Bcc"] is None
    assert str(parsed["From"]) == "Clinique Zoé <clinic@regimen.test>"
    assert smtp.recorder.emails_to("intruder@example.com") == []


async def test_a_mailbox_outside_ascii_goes_with_smtputf8(settings: Settings) -> None:
    handler = RecordingHandler(Recorder())
    server = await start_smtp_server(handler, enable_SMTPUTF8=True)
    port = server.sockets[0].getsockname()[1]
    message = build_message(
        sender="clinic@regimen.test", to="ännä@müller.de", subject="Rendez-vous", text="Bonjour"
    )
    try:
        await send_once(EmailClient(settings.with_overrides(smtp_port=port)), message)
    finally:
        server.close()
    [received] = handler.recorder.emails_to("ännä@müller.de")
    assert received.subject == "Rendez-vous" and received.body.strip() == "Bonjour"


async def _post_inbound(url: str, params: dict[str, str], signature: str) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            # encoded=True: sent byte for byte, as Twilio sends the URL it was given.
            yarl.URL(url, encoded=True),
            data=params,
            headers={"X-Twilio-Signature": signature},
        ) as response:
            return response.status


async def test_webhooks_are_checked_against_the_callback_url_when_it_is_set_apart(
    settings: Settings, clock: FrozenClock, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The notifier has its own public address: Twilio calls (and signs) that one. A signature
    # made for the booking URL is not Twilio calling us there, and is refused with a hint.
    apart = settings.with_overrides(twilio_callback_url="https://notify.example.test")
    runner, notifier = await serve_app(create_notifier(apart, clock, db_url))
    try:
        params = _inbound("SM" + "3" * 32)
        validator = RequestValidator("test-auth-token")
        for_public = validator.compute_signature(settings.public_url + "/twilio/sms", params)
        assert await _post_inbound(notifier + "/twilio/sms", params, for_public) == 403
        assert "signed for REGIMEN_PUBLIC_URL" in caplog.text
        for_callbacks = validator.compute_signature(
            "https://notify.example.test/twilio/sms", params
        )
        assert await _post_inbound(notifier + "/twilio/sms", params, for_callbacks) == 200
    finally:
        await runner.cleanup()


async def test_a_callback_signed_for_one_notification_is_refused_for_another(
    settings: Settings, notifier: str
) -> None:
    # `n` says which row the status is about; a captured callback replayed with another `n`
    # would mark someone else's message delivered.
    params = {
        "AccountSid": "AC" + "0" * 31 + "1",
        "MessageSid": "SM" + "4" * 32,
        "MessageStatus": "delivered",
    }
    signed = RequestValidator("test-auth-token").compute_signature(
        settings.public_url + "/twilio/status?n=7", params
    )
    assert await _post_inbound(notifier + "/twilio/status?n=8", params, signed) == 403
    assert await _post_inbound(notifier + "/twilio/status?n=7", params, signed) == 204


async def test_a_webhook_url_with_an_encoded_query_is_checked_as_twilio_called_it(
    settings: Settings, notifier: str
) -> None:
    # Twilio signs the console's URL as typed, %2F and all; a decoded path would not match.
    target = "/twilio/sms?clinic=north%2Fwest"
    params = _inbound("SM" + "5" * 32)
    signature = RequestValidator("test-auth-token").compute_signature(
        settings.public_url + target, params
    )
    assert await _post_inbound(notifier + target, params, signature) == 200


async def test_one_email_at_a_time_is_accepted_but_not_yet_recorded(settings: Settings) -> None:
    """Eight emails sent at once: the server accepts the next only after the caller has
    recorded the one before (a crash then leaves at most one accepted email unrecorded), and
    every email still goes."""
    handler = RecordingHandler(Recorder())
    server = await start_smtp_server(handler)
    port = server.sockets[0].getsockname()[1]
    accepted_unrecorded = 0
    most = 0

    def accepted() -> None:
        nonlocal accepted_unrecorded, most
        accepted_unrecorded += 1
        most = max(most, accepted_unrecorded)

    async def record() -> None:
        await asyncio.sleep(0.02)  # the commit of the outcome takes a while
        nonlocal accepted_unrecorded
        accepted_unrecorded -= 1

    original = handler.handle_DATA

    async def counting(*args: object) -> str:
        answer = await original(*args)  # type: ignore[arg-type]
        accepted()
        return answer

    handler.handle_DATA = counting  # type: ignore[method-assign]
    try:
        async with EmailClient(settings.with_overrides(smtp_port=port)) as client:
            messages = [
                build_message(
                    sender="c@regimen.test", to=f"p{n}@example.com", subject="s", text="t"
                )
                for n in range(8)
            ]
            await asyncio.gather(*(client.send(m, on_accepted=record) for m in messages))
        assert len(handler.messages) == 8
        assert most == 1
    finally:
        server.close()


async def test_a_slow_mail_server_does_not_hold_every_email_in_turn(settings: Settings) -> None:
    """The gate waits for a server's answer only so long: with a server taking 1.5 s per
    message, four emails sent at once all go within a few seconds, not 6 s."""

    class Slow(RecordingHandler):
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            await asyncio.sleep(1.5)
            return await super().handle_DATA(server, session, envelope)  # type: ignore[arg-type]

    handler = Slow(Recorder())
    server = await start_smtp_server(handler)
    port = server.sockets[0].getsockname()[1]

    async def record() -> None:
        return None

    try:
        async with EmailClient(settings.with_overrides(smtp_port=port)) as client:
            messages = [
                build_message(
                    sender="c@regimen.test", to=f"p{n}@example.com", subject="s", text="t"
                )
                for n in range(4)
            ]
            loop = asyncio.get_running_loop()
            started = loop.time()
            await asyncio.gather(*(client.send(m, on_accepted=record) for m in messages))
            took = loop.time() - started
        assert len(handler.messages) == 4
        assert took < 1.5 * 4 - 1  # not one after the other
    finally:
        server.close()
