"""Email through aiosmtplib, with the failure classes the outbox needs (retry or give up)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Literal

import aiosmtplib

from shared.config import Settings

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
    message_id_domain: str | None = None,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain=message_id_domain or sender.rpartition("@")[2])
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


class EmailClient:
    def __init__(self, settings: Settings, tls_context: ssl.SSLContext | None = None) -> None:
        if not settings.smtp_host:
            raise ValueError("SMTP is not configured")
        self.settings = settings
        self.tls_context = tls_context

    async def send(self, message: EmailMessage) -> str:
        """Send and return the Message-ID; raise EmailError classified for retrying."""
        s = self.settings
        try:
            await aiosmtplib.send(
                message,
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username,
                password=s.smtp_password,
                use_tls=s.smtp_tls == "tls",
                start_tls=True if s.smtp_tls == "starttls" else False,
                tls_context=self.tls_context,
                timeout=s.smtp_timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            kind: FailureKind = "temporary" if all(400 <= c < 500 for c in codes) else "permanent"
            raise EmailError(kind, f"recipient refused: {codes}", code=codes[0]) from exc
        except aiosmtplib.SMTPResponseException as exc:
            kind = "temporary" if 400 <= exc.code < 500 else "permanent"
            raise EmailError(kind, f"SMTP {exc.code}: {exc.message}", code=exc.code) from exc
        except ssl.SSLCertVerificationError as exc:
            # A certificate problem will not fix itself between retries, but an operator can fix
            # it, so the message waits instead of failing for good.
            raise EmailError("temporary", f"SMTP certificate not trusted: {exc}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise EmailError("temporary", f"SMTP unavailable: {exc}") from exc
        return str(message["Message-ID"])
