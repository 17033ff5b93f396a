"""Patients' private self-service links: signed, expiring, revocable, and free of personal data.

A token carries a patient id, the patient's link version and an expiry, signed with HMAC-SHA256
under REGIMEN_SECRET_KEY (a separate key is derived per purpose, so a link token can never pass
as a CSRF token or the other way round). Nothing in it is secret or personal; what makes it a
credential is the signature.

Revocation: the version must equal `patient.link_version`, which is bumped when the mobile or
email changes, on erasure, and when staff send a new link; every link issued before then stops
working at once, without rotating the global key.

Short enough for an SMS: the fields are variable-length integers (a patient id below two million
and a version below 128 take four bytes), the expiry is counted in hours, and 96 bits of
signature remain: about 24 characters in all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

SIGNATURE_BYTES = 12  # 96 bits: forging one is out of reach, and the link stays short
DEFAULT_LIFETIME = timedelta(days=30)
_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
_HOUR = timedelta(hours=1)
_MAX_VARINT_BYTES = 9


class LinkError(Exception):
    """The link does not open; the message can be shown to patients."""


class LinkInvalid(LinkError):
    """Not a link we issued (garbled, truncated, forged, or signed under another key)."""


@dataclass(frozen=True)
class PatientLink:
    """What a genuine token says, before it is checked against the clock and the patient."""

    patient_id: int
    version: int
    expires_at: datetime


class LinkExpired(LinkError):
    """Genuine, but past its expiry: the patient can be offered a new one."""

    def __init__(self, link: PatientLink) -> None:
        super().__init__("This link has expired.")
        self.link = link


class LinkRevoked(LinkError):
    """Genuine, but a newer link replaced it (contact changed, erasure, or staff renewed it)."""

    def __init__(self, link: PatientLink) -> None:
        super().__init__("This link has been replaced by a newer one.")
        self.link = link


def _key(secret: str, purpose: str) -> bytes:
    return hmac.new(secret.encode(), f"regimen:{purpose}".encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("negative")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varints(data: bytes, count: int) -> list[int] | None:
    """`count` varints that use up `data` exactly, or None."""
    values: list[int] = []
    value = shift = used = 0
    for byte in data:
        used += 1
        if used > _MAX_VARINT_BYTES:
            return None
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            values.append(value)
            value = shift = used = 0
    return values if len(values) == count and used == 0 else None


def _mac(secret: str, purpose: str, payload: bytes) -> bytes:
    return hmac.new(_key(secret, purpose), payload, hashlib.sha256).digest()[:SIGNATURE_BYTES]


def sign(secret: str, purpose: str, fields: tuple[int, ...], expires_at: datetime) -> str:
    """A token for non-negative integer `fields` valid until `expires_at` (rounded up to the
    hour)."""
    hours = -(-(expires_at - _EPOCH) // _HOUR)
    payload = b"".join(_varint(v) for v in (*fields, max(hours, 0)))
    return _b64(payload + _mac(secret, purpose, payload))


def verify(secret: str, purpose: str, token: str, count: int) -> tuple[tuple[int, ...], datetime]:
    """(fields, expiry) of a token we signed, whatever the time; raises LinkInvalid otherwise."""
    try:
        raw = _unb64(token)
    except ValueError:
        raise LinkInvalid("This link is not valid.") from None
    if len(raw) <= SIGNATURE_BYTES:
        raise LinkInvalid("This link is not valid.")
    payload, signature = raw[:-SIGNATURE_BYTES], raw[-SIGNATURE_BYTES:]
    if not hmac.compare_digest(signature, _mac(secret, purpose, payload)):
        raise LinkInvalid("This link is not valid.")
    values = _read_varints(payload, count + 1)
    if values is None:  # signed by us, so only a format from another version of this code
        raise LinkInvalid("This link is not valid.")
    *fields, hours = values
    try:
        expires_at = _EPOCH + hours * _HOUR
    except OverflowError:
        raise LinkInvalid("This link is not valid.") from None
    return tuple(fields), expires_at


_PURPOSE = "patient-link"


def patient_link_token(
    secret: str,
    patient_id: int,
    link_version: int,
    *,
    now: datetime,
    lifetime: timedelta = DEFAULT_LIFETIME,
) -> str:
    return sign(secret, _PURPOSE, (patient_id, link_version), now + lifetime)


def read_patient_link(secret: str, token: str) -> PatientLink:
    """What a genuine token says, without checking expiry or version; raises LinkInvalid."""
    (patient_id, version), expires_at = verify(secret, _PURPOSE, token, 2)
    return PatientLink(patient_id, version, expires_at)


def open_patient_link(
    secret: str, token: str, *, now: datetime, current_version: int | None = None
) -> PatientLink:
    """The link, if it opens now: genuine (else LinkInvalid), unexpired (else LinkExpired) and,
    when `current_version` is given, of the patient's current version (else LinkRevoked)."""
    link = read_patient_link(secret, token)
    if current_version is not None and link.version != current_version:
        raise LinkRevoked(link)
    if now >= link.expires_at:
        raise LinkExpired(link)
    return link


def patient_link_url(public_url: str, token: str) -> str:
    return f"{public_url}/s/{token}"


# -- aftercare links ---------------------------------------------------------------------------

# Signed under its own derived key: an aftercare token never opens the patient's private pages
# (nor a patient link the aftercare page), and it names one appointment, nothing else.
_AFTERCARE_PURPOSE = "aftercare"
AFTERCARE_LIFETIME = timedelta(days=30)


@dataclass(frozen=True)
class AftercareLink:
    """What a genuine aftercare token says: the completed appointment and the link version of
    its patient when it was issued (so a new link, a changed contact or erasure revokes it)."""

    appointment_id: int
    version: int
    expires_at: datetime


def aftercare_link_token(
    secret: str, appointment_id: int, link_version: int, *, expires_at: datetime
) -> str:
    """The token of an appointment's aftercare page; `expires_at` is counted from the
    completion, so every message about one session carries the same link."""
    return sign(secret, _AFTERCARE_PURPOSE, (appointment_id, link_version), expires_at)


def read_aftercare_link(secret: str, token: str) -> AftercareLink:
    """What a genuine token says, without checking expiry or version; raises LinkInvalid."""
    (appointment_id, version), expires_at = verify(secret, _AFTERCARE_PURPOSE, token, 2)
    return AftercareLink(appointment_id, version, expires_at)


def aftercare_link_url(public_url: str, token: str) -> str:
    return f"{public_url}/aftercare/{token}"


# -- check-in answer links (emailed check-ins) ---------------------------------------------------
#
# One link per numbered answer of one check-in: it carries the check-in and the digit, signed
# under its own purpose (a check-in link never opens a patient's private pages, nor the other
# way round). Opening it only shows the answer with a button: the answer is recorded by the
# POST, so a mail scanner that fetches every link records nothing.

_CHECK_IN_PURPOSE = "check-in"


@dataclass(frozen=True)
class CheckInLink:
    check_in_id: int
    digit: int
    expires_at: datetime


def check_in_answer_token(
    secret: str, check_in_id: int, digit: int, *, expires_at: datetime
) -> str:
    return sign(secret, _CHECK_IN_PURPOSE, (check_in_id, digit), expires_at)


def open_check_in_link(secret: str, token: str, *, now: datetime) -> CheckInLink:
    """The link if it opens now; LinkInvalid for a forged or garbled one, LinkError when it
    has expired."""
    (check_in_id, digit), expires_at = verify(secret, _CHECK_IN_PURPOSE, token, 2)
    if now >= expires_at:
        raise LinkError("This link has expired.")
    return CheckInLink(check_in_id, digit, expires_at)


def check_in_answer_url(public_url: str, token: str) -> str:
    return f"{public_url}/c/{token}"
