"""A real SMTP server (aiosmtpd) that keeps every email for the dev inbox and the tests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from services.devkit.recorder import Recorder, Sent


class RecordingHandler:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        attachments = [part.get_filename() or "attachment" for part in message.iter_attachments()]
        self.recorder.add(
            Sent(
                channel="email",
                id=str(message.get("Message-ID", "")) or f"<local-{len(self.messages)}>",
                at=datetime.now(UTC),
                to=", ".join(envelope.rcpt_tos),
                sender=envelope.mail_from or "",
                subject=str(message.get("Subject", "")),
                body=text.get_content() if text is not None else "",
                html=html.get_content() if html is not None else None,
                attachments=attachments,
            )
        )
        return "250 Message accepted for delivery"


async def start_smtp_server(
    handler: RecordingHandler, host: str = "127.0.0.1", port: int = 0, **smtp_kwargs: Any
) -> asyncio.Server:
    """Serve SMTP in the running loop (not aiosmtpd's thread-based Controller)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: SMTP(handler, hostname="regimen.localhost", **smtp_kwargs), host, port
    )
