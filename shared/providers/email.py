"""Email through aiosmtplib, with the failure classes the outbox needs (retry or give up)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email import encoders
from email.header import Header
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, make_msgid, parseaddr
from typing import Literal

import aiosmtplib
from aiosmtplib.errors import SMTPDataError, SMTPServerDisconnected, SMTPTimeoutError
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from aiosmtplib.response import SMTPResponse
from aiosmtplib.status import SMTPStatus
from aiosmtplib.typing import Default

from shared.config import Settings
from shared.providers.redaction import without_addresses

FailureKind = Literal["temporary", "permanent"]


class EmailError(Exception):
    def __init__(self, kind: FailureKind, reason: str, *, code: int | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    maintype: str
    subtype: str
    params: dict[str, str] | None = None


def build_message(
    *,
    sender: str,
    to: str,
    subject: str,
    text: str,
    html: str | None = None,
    attachments: list[Attachment] | None = None,
    message_id: str | None = None,
) -> Message:
    """A text email, with an HTML alternative and attachments when given.

    Built with the classic (compat32) MIME classes rather than EmailMessage: the same MIME
    structure on the wire at about a third of the CPU, which counts when a reminder burst goes
    out. Non-ASCII in the subject or a display name is RFC 2047 encoded, a non-ASCII domain is
    sent in its IDNA form, and bodies are UTF-8. Only a mailbox whose local part is not ASCII
    needs SMTPUTF8, which compat32 cannot write: that message is built as an EmailMessage.
    Line breaks in the subject or an address become spaces (they would start a new header)."""
    subject = _one_line(subject)
    message_id = message_id or make_msgid(domain=sender.rpartition("@")[2] or None)
    from_header, to_header = _ascii_mailbox(sender), _ascii_mailbox(to)
    if from_header is None or to_header is None:
        return _build_smtputf8(
            _one_line(sender), _one_line(to), subject, text, html, attachments, message_id
        )
    body: Message = MIMEText(text, "plain", "utf-8")
    if html is not None:
        alternative = MIMEMultipart("alternative")
        alternative.attach(body)
        alternative.attach(MIMEText(html, "html", "utf-8"))
        body = alternative
    message = body
    if attachments:
        message = MIMEMultipart("mixed")
        message.attach(body)
        for item in attachments:
            # typeshed types MIMEBase's **params as if one could be its `policy`
            part = MIMEBase(item.maintype, item.subtype, **(item.params or {}))  # type: ignore[arg-type]
            part.set_payload(item.content)
            encoders.encode_base64(part)
            part.add_header("Content-Disposition", "attachment", filename=item.filename)
            message.attach(part)
    message["From"] = from_header
    message["To"] = to_header
    # A compat32 message takes a Header (RFC 2047 encoded) where typeshed says str.
    message["Subject"] = subject if subject.isascii() else Header(subject, "utf-8")  # type: ignore[assignment]
    message["Message-ID"] = message_id
    return message


def _one_line(value: str) -> str:
    return " ".join(value.splitlines())


def _ascii_mailbox(value: str) -> str | None:
    """The address header in ASCII (display name encoded, domain in IDNA); None when the local
    part is not ASCII."""
    name, address = parseaddr(_one_line(value))
    if not address:
        return _one_line(value) if value.isascii() else None
    local, _, domain = address.rpartition("@")
    if not local.isascii():
        return None
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return formataddr((name, f"{local}@{domain}"), charset="utf-8")


def _build_smtputf8(
    sender: str,
    to: str,
    subject: str,
    text: str,
    html: str | None,
    attachments: list[Attachment] | None,
    message_id: str,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    for item in attachments or []:
        message.add_attachment(
            item.content,
            maintype=item.maintype,
            subtype=item.subtype,
            filename=item.filename,
            params=item.params or {},
        )
    return message


Accepted = Callable[[], Awaitable[None]]

# How long the next email waits for a slow server's answer to the one before it at the
# acceptance gate: beyond this the server's delay, not ours, is what leaves several accepted.
ACCEPTANCE_PATIENCE = 1.0


class AcceptanceGate:
    """Lets one email at a time into the step in which the server accepts it (DATA and its
    answer) and holds the next until the caller has recorded that acceptance, so a crash can
    leave at most one accepted email unrecorded (SMTP cannot be asked later whether a message
    arrived: an unrecorded one is sent again). If the server's answer and that record take longer
    than `patience`, the next email goes in anyway: one slow server must not make every email
    wait for it in turn."""

    def __init__(self, patience: float = ACCEPTANCE_PATIENCE) -> None:
        self.patience = patience
        self._one = asyncio.Semaphore(1)

    @contextlib.asynccontextmanager
    async def entered(self) -> AsyncIterator[None]:
        await self._one.acquire()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._one.release()

        timer = asyncio.get_running_loop().call_later(self.patience, release)
        try:
            yield
        finally:
            timer.cancel()
            release()


class _SMTP(aiosmtplib.SMTP):
    """aiosmtplib's client, with the end of the DATA step (the message's last bytes, the
    server's acceptance, and then `on_accepted`: the caller's commit of it) run inside the
    client's acceptance gate. The DATA command itself goes first, outside the gate; the message
    is written and read back with the protocol's own write, framing and read_response, as
    aiosmtplib's execute_data_command does, so only the wait that matters is gated."""

    gate: AcceptanceGate | None = None
    on_accepted: Accepted | None = None

    async def data(
        self,
        message: str | bytes,
        /,
        *,
        timeout: float | Literal[Default.token] | None = Default.token,  # noqa: ASYNC109 - aiosmtplib's signature
    ) -> SMTPResponse:
        if self.gate is None or self.protocol is None:
            return await super().data(message, timeout=timeout)
        wait = self.timeout if timeout is Default.token else timeout
        raw = message.encode("ascii") if isinstance(message, str) else message
        body = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(raw))
        start = await self.execute_command(b"DATA", timeout=wait)
        if start.code != SMTPStatus.start_input:
            raise SMTPDataError(start.code, start.message)
        # The server cannot accept before the final ".": the body goes ahead of the gate, so
        # only that line, the answer and the record of it are done one email at a time.
        self.protocol.write(body)
        async with self.gate.entered():
            try:
                self.protocol.write(b".\r\n")
                response = await self.protocol.read_response(timeout=wait)
            except (SMTPServerDisconnected, SMTPTimeoutError):
                self.close()
                raise
            if response.code != SMTPStatus.completed:
                raise SMTPDataError(response.code, response.message)
            if self.on_accepted is not None:
                await self.on_accepted()
        return response


class EmailClient:
    """Sends through a small pool of open SMTP connections: opening one per message (TCP, EHLO,
    STARTTLS, AUTH) would cost more than the message itself when a reminder burst goes out.

    With `on_accepted`, a send runs it as soon as the server has accepted the message, inside
    the client's acceptance gate (AcceptanceGate): at most one message is between the server's
    acceptance and the caller's commit of it, unless the server is slow."""

    # Connections kept open when idle: at least as many as the sends one process makes at once,
    # so a busy notifier does not open and close connections all the time.
    MIN_IDLE = 8
    # A connection idle longer than this is probed with NOOP first: servers drop idle clients.
    PROBE_AFTER = 10.0

    def __init__(self, settings: Settings, tls_context: ssl.SSLContext | None = None) -> None:
        if not settings.smtp_host:
            raise ValueError("SMTP is not configured")
        self.settings = settings
        self.tls_context = tls_context
        self._idle: list[tuple[_SMTP, float]] = []
        self.max_idle = max(self.MIN_IDLE, settings.notifier_concurrency)
        self.gate = AcceptanceGate()

    def _new_connection(self) -> _SMTP:
        s = self.settings
        return _SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username,
            password=s.smtp_password,
            use_tls=s.smtp_tls == "tls",
            start_tls=True if s.smtp_tls == "starttls" else False,
            tls_context=self.tls_context,
            timeout=s.smtp_timeout,
        )

    async def _connection(self) -> _SMTP:
        while self._idle:
            connection, since = self._idle.pop()
            if not connection.is_connected:
                continue
            if time.monotonic() - since > self.PROBE_AFTER:
                try:
                    await connection.noop()
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    connection.close()
                    continue
            return connection
        connection = self._new_connection()
        await connection.connect()
        return connection

    def _put_back(self, connection: _SMTP) -> None:
        if connection.is_connected and len(self._idle) < self.max_idle:
            self._idle.append((connection, time.monotonic()))
        else:
            connection.close()

    async def send(self, message: Message, *, on_accepted: Accepted | None = None) -> str:
        """Send and return the Message-ID; raise EmailError classified for retrying.
        `on_accepted` runs once the server has accepted the message (see the class)."""
        connection: _SMTP | None = None
        try:
            connection = await self._connection()
            connection.gate = self.gate if on_accepted is not None else None
            connection.on_accepted = on_accepted
            try:
                await connection.send_message(message)
            finally:
                connection.gate = None
                connection.on_accepted = None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            kind: FailureKind = "temporary" if all(400 <= c < 500 for c in codes) else "permanent"
            self._discard(connection)
            raise EmailError(kind, f"recipient refused: {codes}", code=codes[0]) from exc
        except aiosmtplib.SMTPResponseException as exc:
            kind = "temporary" if 400 <= exc.code < 500 else "permanent"
            self._discard(connection)
            text = without_addresses(exc.message)
            raise EmailError(kind, f"SMTP {exc.code}: {text}", code=exc.code) from exc
        except ssl.SSLCertVerificationError as exc:
            # A certificate problem will not fix itself between retries, but an operator can fix
            # it, so the message waits instead of failing for good.
            self._discard(connection)
            raise EmailError("temporary", f"SMTP certificate not trusted: {exc}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            self._discard(connection)
            raise EmailError(
                "temporary", f"SMTP unavailable: {without_addresses(str(exc))}"
            ) from exc
        self._put_back(connection)
        return str(message["Message-ID"])

    @staticmethod
    def _discard(connection: _SMTP | None) -> None:
        # After an error the session's state is unknown; never reuse it.
        if connection is not None:
            connection.close()

    async def __aenter__(self) -> EmailClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection, _ in idle:
            try:
                # Bounded: shutting down must not wait on a slow mail server.
                await connection.quit(timeout=2)
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                connection.close()


async def send_once(client: EmailClient, message: Message) -> str:
    """Send one message and close the client's connections (scripts, one-off sends)."""
    async with client:
        return await client.send(message)
