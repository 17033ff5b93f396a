"""The provider calls: one composed message to Twilio or the SMTP server, and what came back.

A call never raises: whatever happens ends in a CallResult (services/notifier/outcomes.py), and
anything unexpected after the request may have left is `ambiguous` (reconciled, never assumed
unsent). No database work happens here: the caller decided the send and committed that before
calling, and records the result after.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from services.notifier.metrics import NotifierMetrics
from services.notifier.outcomes import Accepted, CallResult, Refused
from shared.config import Settings
from shared.messaging import Composed
from shared.providers.email import EmailClient, EmailError, build_message
from shared.providers.sms import SmsClient, SmsError, status_callback_url
from shared.store.notifications.rows import Notification

log = logging.getLogger("regimen.notifier.sending")

# Twilio's "authenticate" error: wrong credentials are an operator's fix, not the message's fault.
TWILIO_AUTH_CODE = 20003

OnAccepted = Callable[[Accepted], Awaitable[None]]


def message_id_for(notification_id: int, sender: str) -> str:
    """Deterministic, so a resend after an unknown outcome carries the same Message-ID and the
    receiving side treats it as the same message."""
    domain = sender.rpartition("@")[2] or "regimen.localhost"
    return f"<notification-{notification_id}.regimen@{domain}>"


def reconcile_extra(
    settings: Settings, notification: Notification, composed: Composed
) -> dict[str, object]:
    """What reconciliation needs if the call's outcome is lost: where it went, and for an email
    its Message-ID (stored with the attempt, before the call)."""
    extra: dict[str, object] = {"attempt_to": composed.to}
    if notification.channel == "email":
        extra["message_id"] = message_id_for(notification.id, settings.email_from or "")
    return extra


class Sender:
    def __init__(
        self, *, settings: Settings, sms: SmsClient, email: EmailClient, metrics: NotifierMetrics
    ) -> None:
        self.settings = settings
        self.sms = sms
        self.email = email
        self.metrics = metrics

    async def call(
        self,
        notification: Notification,
        composed: Composed,
        now: datetime,
        *,
        on_accepted: OnAccepted | None = None,
    ) -> CallResult:
        """`on_accepted` (email only) runs with the result as soon as the SMTP server has
        accepted the message, before the next email may be accepted (EmailClient): the caller
        records it there, so that a crash leaves at most one accepted email unrecorded."""
        if notification.channel == "sms":
            return await self._sms(notification, composed, now)
        return await self._email(notification, composed, on_accepted)

    async def _sms(
        self, notification: Notification, composed: Composed, now: datetime
    ) -> CallResult:
        assert composed.to is not None
        validity = None
        if notification.expires_at is not None:
            validity = max(1, int((notification.expires_at - now).total_seconds()))
        callback = status_callback_url(self.settings, notification.id)
        try:
            sent = await self.sms.send(
                composed.to, composed.body, status_callback=callback, validity_period=validity
            )
        except SmsError as exc:
            kind = "temporary" if exc.code == TWILIO_AUTH_CODE else exc.kind
            self.metrics.provider_call("sms", kind, exc.code)
            return Refused(kind, exc.reason, exc.code)
        except Exception as exc:  # the request may have left: never assume it did not
            log.exception("sms send raised", extra={"notification_id": notification.id})
            return Refused("ambiguous", f"send raised {type(exc).__name__}")
        self.metrics.provider_call("sms", "sent")
        return Accepted(
            sent.sid, f"accepted by Twilio ({sent.status})", sent.segments or composed.segments
        )

    async def _email(
        self, notification: Notification, composed: Composed, on_accepted: OnAccepted | None
    ) -> CallResult:
        assert composed.to is not None
        sender = self.settings.email_from
        if not sender:
            return Refused("temporary", "REGIMEN_EMAIL_FROM is not set")
        try:
            message = build_message(
                sender=sender,
                to=composed.to,
                subject=composed.subject or "",
                text=composed.body,
                html=composed.html,
                attachments=composed.attachments,
                message_id=message_id_for(notification.id, sender),
            )
        except (ValueError, UnicodeError) as exc:  # nothing left: the address cannot be used
            return Refused("permanent", f"cannot build the email: {type(exc).__name__}")
        accepted = Accepted(str(message["Message-ID"]), "accepted by the SMTP server")

        async def record_acceptance() -> None:
            if on_accepted is not None:
                await on_accepted(accepted)

        try:
            await self.email.send(
                message, on_accepted=record_acceptance if on_accepted is not None else None
            )
        except EmailError as exc:
            self.metrics.provider_call("email", exc.kind, exc.code)
            return Refused(exc.kind, exc.reason, exc.code)
        except Exception as exc:  # the message may have been accepted: never assume it was not
            log.exception("email send raised", extra={"notification_id": notification.id})
            return Refused("ambiguous", f"send raised {type(exc).__name__}")
        self.metrics.provider_call("email", "sent")
        return accepted
