"""What a patient's erasure removes from their messages (shared/store/notifications/), for the
admin API's erasure (services/booking/api/admin_erasure.py): the addresses and texts the rows
and their attempts hold. Their pending messages are cancelled by outbox.cancel_pending_for_patient.

Invariants: kind, channel, times, statuses and provider ids stay (the record of what was sent);
the status history is append-only and untouched; a row whose outcome was lost is left to
reconciliation, which forgets its address when it settles it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.store import Executor

# Rows whose outcome is not known yet: a provider call in flight (its attempt is open) or one
# whose answer was lost (`unknown`: reconciliation asks Twilio about the address the attempt went
# to). Erasure leaves their address to whatever settles them, which forgets it
# (rows.FORGET_IF_ERASED).
UNSETTLED = "unknown"
_IN_FLIGHT = """(status = 'sending' AND EXISTS (SELECT 1 FROM notification_attempt a
                 WHERE a.notification_id = notification.id AND a.finished_at IS NULL))"""
# Context keys that can hold contact data or text written to the patient: where an attempt went,
# and the free text of a reply or staff alert.
PERSONAL_CONTEXT_KEYS = ("attempt_to", "text")
ERASED_TEXT = "[erased]"
# Addresses a provider's error text may quote ("The 'To' number +44... is not valid", "550 5.1.1
# <a@b.example>: unknown user"): any email address, E.164 numbers and long bare digit runs
# (national numbers). Short numbers (error codes, the parts of a date) stay readable.
_EMAIL_PATTERN = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+"
_PHONE_PATTERN = r"\+[0-9]{7,15}|[0-9]{9,15}"


@dataclass(frozen=True)
class ScrubbedMessages:
    scrubbed_ids: list[int]  # rows whose address, texts and provider details were removed
    unsettled_ids: list[int]  # left to reconciliation, which forgets the address when it settles


async def scrub_for_patient(conn: Executor, patient_id: int, *, now: datetime) -> ScrubbedMessages:
    """Erasure: remove the contact data the patient's messages hold (the address an attempt went
    to, reply texts, a fixed recipient other than a staff member's, addresses quoted in status
    reasons and in every attempt's provider detail), keeping kind, channel, times, statuses and
    provider ids. Status history (`notification_event`) is append-only and is not touched.

    Call after outbox.cancel_pending_for_patient in the same transaction. Rows whose outcome is
    not known yet (a call in flight, a lost answer) are left and listed as unsettled: whatever
    records their outcome forgets the address then (provider texts are redacted before they are
    stored, so the outcome brings no address back)."""
    rows = await conn.fetch(
        f"""
        UPDATE notification SET
            context = context - $2::text[],
            recipient = CASE WHEN kind = 'staff_alert' THEN recipient END,
            status_reason = regexp_replace(regexp_replace(status_reason,
                '{_EMAIL_PATTERN}', $3, 'g'), '{_PHONE_PATTERN}', $3, 'g'),
            updated_at = $4
        WHERE patient_id = $1 AND status <> $5 AND NOT {_IN_FLIGHT}
        RETURNING id
        """,  # noqa: S608 - the patterns are constants
        patient_id,
        list(PERSONAL_CONTEXT_KEYS),
        ERASED_TEXT,
        now,
        UNSETTLED,
    )
    await conn.execute(
        f"""
        UPDATE notification_attempt a SET detail = regexp_replace(regexp_replace(a.detail,
                '{_EMAIL_PATTERN}', $2, 'g'), '{_PHONE_PATTERN}', $2, 'g')
        FROM notification n
        WHERE n.id = a.notification_id AND n.patient_id = $1 AND a.detail <> ''
        """,  # noqa: S608 - the patterns are constants
        patient_id,
        ERASED_TEXT,
    )
    unsettled = await conn.fetch(
        f"SELECT id FROM notification WHERE patient_id = $1 AND (status = $2 OR {_IN_FLIGHT})",  # noqa: S608 - a constant fragment
        patient_id,
        UNSETTLED,
    )
    return ScrubbedMessages(sorted(r["id"] for r in rows), sorted(r["id"] for r in unsettled))
