"""Every SMS a patient sends us (owner of `inbound_message`).

Invariants: a message is stored once, whatever Twilio redelivers (`message_sid` is unique);
`opt_out_type` (STOP, START...) is kept even after an erasure, as consent evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.store import Executor, affected, patients

# What an erased patient's messages keep in place of the number they came from.
ERASED_NUMBER = "erased"


@dataclass(frozen=True)
class InboundMessage:
    """One `inbound_message` row (the patient it was linked to aside)."""

    id: int
    message_sid: str
    from_number: str
    to_number: str
    body: str
    opt_out_type: str | None
    received_at: datetime


_COLUMNS = "id, message_sid, from_number, to_number, body, opt_out_type, received_at"


async def insert(
    db: Executor,
    *,
    message_sid: str,
    from_number: str,
    to_number: str,
    body: str,
    opt_out_type: str | None,
    received_at: datetime,
) -> int | None:
    """Store the message; return its id, or None when Twilio delivered the same one before."""
    stored = await db.fetchval(
        """
        INSERT INTO inbound_message (message_sid, from_number, to_number, body, opt_out_type,
                                     received_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (message_sid) DO NOTHING
        RETURNING id
        """,
        message_sid,
        from_number,
        to_number,
        body,
        opt_out_type,
        received_at,
    )
    return None if stored is None else int(stored)


# -- Erasure and access requests (added for the admin API) -----------------------------------------


async def for_patient(db: Executor, patient_id: int, mobile: str | None) -> list[InboundMessage]:
    """The patient's messages: those linked to them, and those from their mobile that no one
    else's record claims. Oldest first."""
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM inbound_message
        WHERE patient_id = $1 OR (patient_id IS NULL AND from_number = $2)
        ORDER BY received_at, id
        """,  # noqa: S608 - constant
        patient_id,
        mobile,
    )
    return [InboundMessage(**dict(row)) for row in rows]


@dataclass(frozen=True)
class ScrubbedInbound:
    scrubbed: int  # messages whose text and number were removed
    shared_number_kept: int  # from the patient's old number, which another patient still has


async def scrub_for_patient(
    conn: Executor, patient_id: int, mobile: str | None, *, clinic_id: int
) -> ScrubbedInbound:
    """Erasure: blank the text and number of the patient's messages (those linked to them, and
    those from `mobile`, their number until now), and link them to the patient so that the
    record still shows that, when, and whether they said STOP (`opt_out_type` is kept: it is
    consent evidence). Messages from a number another patient of the clinic still has are kept:
    they may be that patient's."""
    shared = await patients.others_have_mobile(
        conn, clinic_id=clinic_id, mobile=mobile, patient_id=patient_id
    )
    theirs = None if shared else mobile
    result = await conn.execute(
        """
        UPDATE inbound_message SET body = '', from_number = $3, patient_id = $1
        WHERE patient_id = $1 OR (patient_id IS NULL AND $2::text IS NOT NULL
                                  AND from_number = $2)
        """,
        patient_id,
        theirs,
        ERASED_NUMBER,
    )
    kept = 0
    if shared:
        kept = int(
            await conn.fetchval(
                "SELECT count(*) FROM inbound_message WHERE patient_id IS NULL "
                "AND from_number = $1",
                mobile,
            )
        )
    return ScrubbedInbound(affected(result), kept)


# -- Conversation view (queues branch) -------------------------------------------------------------


@dataclass(frozen=True)
class ConversationReply:
    """A patient's SMS as their conversation shows it: the text, what was made of it and the
    answer given."""

    id: int
    body: str
    received_at: datetime
    handled_as: str | None
    answer: str | None


async def conversation_page(
    db: Executor,
    patient_id: int,
    mobile: str | None,
    *,
    after: tuple[datetime, int] | None,
    limit: int,
) -> list[ConversationReply]:
    """The patient's messages (as `for_patient` finds them) by (received_at, id), after the
    message whose (received_at, id) is `after`."""
    rows = await db.fetch(
        """
        SELECT id, body, received_at, handled_as, answer FROM inbound_message
        WHERE (patient_id = $1 OR (patient_id IS NULL AND from_number = $2))
          AND ($3::timestamptz IS NULL OR (received_at, id) > ($3, $4::bigint))
        ORDER BY received_at, id
        LIMIT $5
        """,
        patient_id,
        mobile,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [ConversationReply(**dict(row)) for row in rows]
