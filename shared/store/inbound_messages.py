"""Every SMS a patient sends us (owner of `inbound_message`).

Invariants: a message is stored once, whatever Twilio redelivers (`message_sid` is unique);
`opt_out_type` (STOP, START...) is kept even after an erasure, as consent evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

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


HandledAs = Literal[
    "confirmed",
    "already_confirmed",
    "reschedule_requested",
    "cancelled",
    "cancel_refused",
    "opted_out",
    "opted_in",
    "help",
    "emergency",
    "inbox",
    "asked_which",
    # the answer to an aftercare check-in (shared.domain.check_ins.record_answer)
    "check_in_answered",
]


@dataclass(frozen=True)
class Handling:
    """What the reply handler made of a message (all None / empty until it has run)."""

    id: int
    from_number: str
    body: str
    opt_out_type: str | None
    received_at: datetime
    patient_id: int | None
    handled_as: HandledAs | None
    answer: str | None
    handled_at: datetime | None
    appointment_ids: list[int]


@dataclass(frozen=True)
class Handled:
    handled_as: HandledAs
    clinic_id: int | None
    patient_id: int | None
    appointment_ids: Sequence[int]
    answered_id: int | None  # the notification whose question it answered
    answer: str | None  # the TwiML message sent back, None for none
    acknowledged: bool  # the answer was the inbox's acknowledgement


def _handling(row: asyncpg.Record) -> Handling:
    return Handling(**{**dict(row), "appointment_ids": list(row["appointment_ids"])})


async def latest_asked_which(db: Executor, from_number: str, *, since: datetime) -> Handling | None:
    """The number's latest message answered with "which patient's appointment?" since `since`,
    unless a later message of the number was acted on (the question is then stale)."""
    row = await db.fetchrow(
        """
        SELECT id, from_number, body, opt_out_type, received_at, patient_id, handled_as, answer,
               handled_at, appointment_ids
        FROM inbound_message m
        WHERE from_number = $1 AND handled_as = 'asked_which' AND handled_at >= $2
          AND NOT EXISTS (SELECT 1 FROM inbound_message later
                          WHERE later.from_number = m.from_number AND later.id > m.id
                            AND later.handled_as IN ('confirmed', 'already_confirmed',
                                'reschedule_requested', 'cancelled', 'cancel_refused'))
        ORDER BY id DESC
        LIMIT 1
        """,
        from_number,
        since,
    )
    return None if row is None else _handling(row)


async def id_of(db: Executor, message_sid: str) -> int | None:
    value = await db.fetchval("SELECT id FROM inbound_message WHERE message_sid = $1", message_sid)
    return None if value is None else int(value)


async def lock_unhandled_from(
    conn: Executor, from_number: str, *, up_to_id: int, since: datetime
) -> list[Handling]:
    """The number's messages not yet handled, received since `since`, up to and including
    `up_to_id`, oldest first and locked: replies are handled in the order they came. The
    caller holds the number's advisory lock (lock_number)."""
    rows = await conn.fetch(
        """
        SELECT id, from_number, body, opt_out_type, received_at, patient_id, handled_as, answer,
               handled_at, appointment_ids
        FROM inbound_message
        WHERE from_number = $1 AND handled_at IS NULL AND id <= $2
          AND (received_at >= $3 OR id = $2)
        ORDER BY id
        FOR UPDATE
        """,
        from_number,
        up_to_id,
        since,
    )
    return [_handling(r) for r in rows]


async def get_handling(db: Executor, message_id: int) -> Handling | None:
    row = await db.fetchrow(
        """
        SELECT id, from_number, body, opt_out_type, received_at, patient_id, handled_as, answer,
               handled_at, appointment_ids
        FROM inbound_message WHERE id = $1
        """,
        message_id,
    )
    return None if row is None else _handling(row)


async def lock_number(conn: Executor, from_number: str) -> None:
    """Serialise, until the caller's transaction ends, the handling of one number's replies."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        f"regimen.inbound-sms:{from_number}",
    )


async def record_handling(
    conn: Executor, message_id: int, handled: Handled, *, now: datetime
) -> None:
    await conn.execute(
        """
        UPDATE inbound_message
        SET handled_as = $2, clinic_id = $3, patient_id = coalesce($4, patient_id),
            appointment_ids = $5, answered_id = $6, answer = $7, acknowledged = $8,
            handled_at = $9
        WHERE id = $1
        """,
        message_id,
        handled.handled_as,
        handled.clinic_id,
        handled.patient_id,
        list(handled.appointment_ids),
        handled.answered_id,
        handled.answer,
        handled.acknowledged,
        now,
    )


async def acknowledged_since(db: Executor, from_number: str, since: datetime) -> bool:
    """Whether the number got the inbox's acknowledgement since `since` (it gets one a day)."""
    return bool(
        await db.fetchval(
            """
            SELECT EXISTS (SELECT 1 FROM inbound_message
                           WHERE from_number = $1 AND acknowledged AND handled_at >= $2)
            """,
            from_number,
            since,
        )
    )


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
    """Erasure: blank the text, the answer given and the number of the patient's messages
    (those linked to them, and those from `mobile`, their number until now), and link them to
    the patient so that the record still shows that, when, and whether they said STOP
    (`opt_out_type` is kept: it is consent evidence). Messages from a number another patient
    of the clinic still has are kept: they may be that patient's."""
    shared = await patients.others_have_mobile(
        conn, clinic_id=clinic_id, mobile=mobile, patient_id=patient_id
    )
    theirs = None if shared else mobile
    result = await conn.execute(
        """
        UPDATE inbound_message SET body = '', from_number = $3, patient_id = $1, answer = NULL
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
