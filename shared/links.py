"""Patients' private self-service links: signed, expiring, and free of personal data.

A token carries only a patient id and an expiry, signed with HMAC-SHA256 under
REGIMEN_SECRET_KEY (a separate key is derived per purpose, so a link token can never pass as a
CSRF token or the other way round). It is short enough for an SMS: about 30 characters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from datetime import UTC, datetime, timedelta

SIGNATURE_BYTES = 12  # 96 bits: forging one is out of reach, and the link stays short
DEFAULT_LIFETIME = timedelta(days=120)


class LinkError(Exception):
    """The link is not one we issued, or it has expired; the message can be shown to patients."""


def _key(secret: str, purpose: str) -> bytes:
    return hmac.new(secret.encode(), f"regimen:{purpose}".encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: str, purpose: str, subject_id: int, expires_at: datetime) -> str:
    payload = struct.pack(">QI", subject_id, int(expires_at.timestamp()) // 60)
    signature = hmac.new(_key(secret, purpose), payload, hashlib.sha256).digest()
    return _b64(payload + signature[:SIGNATURE_BYTES])


def verify(secret: str, purpose: str, token: str, *, now: datetime) -> int:
    """The subject id of a valid, unexpired token; raises LinkError otherwise."""
    try:
        raw = _unb64(token)
    except ValueError:
        raise LinkError("This link is not valid.") from None
    if len(raw) != 12 + SIGNATURE_BYTES:
        raise LinkError("This link is not valid.")
    payload, signature = raw[:12], raw[12:]
    expected = hmac.new(_key(secret, purpose), payload, hashlib.sha256).digest()[:SIGNATURE_BYTES]
    if not hmac.compare_digest(signature, expected):
        raise LinkError("This link is not valid.")
    subject_id, expires_minute = struct.unpack(">QI", payload)
    if now >= datetime.fromtimestamp(expires_minute * 60, UTC):
        raise LinkError("This link has expired. Ask the clinic for a new one.")
    return subject_id


def patient_link_token(
    secret: str, patient_id: int, *, now: datetime, lifetime: timedelta = DEFAULT_LIFETIME
) -> str:
    return sign(secret, "patient-link", patient_id, now + lifetime)


def patient_from_link(secret: str, token: str, *, now: datetime) -> int:
    return verify(secret, "patient-link", token, now=now)


def patient_link_url(public_url: str, token: str) -> str:
    return f"{public_url}/s/{token}"
