"""The outcome policy: what the end of a provider call, or the lack of one, means for its row.

Pure functions of the row, what happened and the time (no I/O, no clock of their own), so every
rule is tested on its own (tests/unit/test_outcome_policy.py):

* a call accepted is `sent`;
* a temporary refusal is retried after an exponential backoff with jitter, unless the attempts
  are used up or the retry would come after the row's expiry: then `failed`, with the last error;
* a permanent refusal is `failed` at once;
* a call whose answer never came (timeout, crash, cut off at shutdown) is `unknown`: the request
  may have reached the provider, so it is reconciled, never blindly resent;
* reconciling an unknown SMS: found at Twilio → `sent`; not found once the grace period is over →
  sent again (`scheduled`), or `expired` / `failed` when it is past its use or out of attempts;
  an unknown email is sent again with the same Message-ID (SMTP cannot be asked).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from shared.store.notifications.dispatch import SendOutcome
from shared.store.notifications.rows import Notification

MAX_BACKOFF = timedelta(hours=1)

RefusalKind = Literal["temporary", "permanent", "ambiguous"]


@dataclass(frozen=True)
class Accepted:
    """The provider took the message."""

    provider_id: str
    detail: str
    segments: int | None = None


@dataclass(frozen=True)
class Refused:
    """The call did not succeed: `ambiguous` when the request may have been taken anyway."""

    kind: RefusalKind
    reason: str
    code: int | None = None


CallResult = Accepted | Refused


@dataclass(frozen=True)
class RetryRules:
    base: timedelta
    max_attempts: int


def backoff(attempts: int, base: timedelta, *, rng: random.Random | None = None) -> timedelta:
    """Exponential, with full jitter in its upper half so retries of a burst spread out."""
    exponent = min(max(attempts - 1, 0), 20)
    delay = min(base * (2**exponent), MAX_BACKOFF)
    return delay * (rng or random).uniform(0.5, 1.0)


def body_hash(body: str) -> bytes:
    """What reconciliation matches a provider's message against (bodies are never stored)."""
    return hashlib.sha256(body.encode()).digest()


def after_call(
    notification: Notification,
    attempt_id: int,
    result: CallResult,
    *,
    now: datetime,
    rules: RetryRules,
    rng: random.Random | None = None,
) -> SendOutcome:
    """The row's outcome for one call. `notification.attempts` is the count before this call."""
    if isinstance(result, Accepted):
        return SendOutcome(
            notification.id,
            attempt_id,
            "sent",
            now,
            result.detail,
            "sent",
            provider_id=result.provider_id,
            segments=result.segments,
        )
    if result.kind == "ambiguous":
        reason = f"outcome unknown, to be reconciled: {result.reason}"
        return SendOutcome(notification.id, attempt_id, "unknown", now, reason, "ambiguous")
    if result.kind == "permanent":
        return SendOutcome(
            notification.id,
            attempt_id,
            "failed",
            now,
            result.reason,
            "permanent",
            error_code=result.code,
        )
    attempts = notification.attempts + 1
    due_at = now + backoff(attempts, rules.base, rng=rng)
    if attempts >= rules.max_attempts:
        final = f"gave up after {attempts} attempts: {result.reason}"
    elif notification.expires_at is not None and due_at >= notification.expires_at:
        final = f"no retry before it expires: {result.reason}"
    else:
        return SendOutcome(
            notification.id,
            attempt_id,
            "scheduled",
            now,
            f"temporary failure, retry {attempts + 1} later: {result.reason}",
            "temporary",
            error_code=result.code,
            due_at=due_at,
        )
    return SendOutcome(
        notification.id, attempt_id, "failed", now, final, "temporary", error_code=result.code
    )


# -- reconciling a lost answer -------------------------------------------------------------------

NotSent = Literal["scheduled", "expired", "failed"]


@dataclass(frozen=True)
class FoundSent:
    """The provider has the message: the row is sent."""

    provider_id: str
    segments: int | None
    reason: str


@dataclass(frozen=True)
class NotFound:
    """The provider never got it: the row goes on as `status`."""

    status: NotSent
    reason: str


@dataclass(frozen=True)
class AskLater:
    """Too early to tell (the provider may not list it yet)."""


Reconciled = FoundSent | NotFound | AskLater


def is_expired(notification: Notification, now: datetime) -> bool:
    return notification.expires_at is not None and notification.expires_at <= now


def reconcile_email(notification: Notification, now: datetime) -> NotFound:
    """SMTP has no way to ask what arrived: send again with the same Message-ID, which
    receivers treat as the same message."""
    message_id = notification.context.get("message_id") or "(derived from the id)"
    reason = f"email outcome unknown: sending again with the same Message-ID {message_id}"
    return NotFound("expired" if is_expired(notification, now) else "scheduled", reason)


def reconcile_sms(
    notification: Notification,
    *,
    found: tuple[str, int | None] | None,
    last_attempt_at: datetime | None,
    now: datetime,
    grace: timedelta,
    max_attempts: int,
) -> Reconciled:
    """`found`: (sid, segments) of the provider's message whose body matches the attempt's
    hash and belongs to no other row, or None. A row with no provider call started (no hash or
    address recorded) cannot have been sent."""
    started = (
        isinstance(notification.context.get("attempt_to"), str)
        and notification.body_hash is not None
        and last_attempt_at is not None
    )
    if not started:
        reason = "no provider call was started: sending"
        return NotFound("expired" if is_expired(notification, now) else "scheduled", reason)
    if found is not None:
        sid, segments = found
        return FoundSent(sid, segments, f"reconciled: Twilio has it as {sid}")
    assert last_attempt_at is not None
    if now - last_attempt_at < grace:
        return AskLater()
    missing = f"Twilio has no such message {int(grace.total_seconds())} s after the attempt"
    if is_expired(notification, now):
        return NotFound("expired", f"reconciled: {missing}; expired meanwhile")
    if notification.attempts >= max_attempts:
        reason = f"reconciled: {missing}; gave up after {notification.attempts} attempts"
        return NotFound("failed", reason)
    return NotFound("scheduled", f"reconciled: {missing}; sending again")
