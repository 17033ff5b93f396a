"""Every SMS a patient sends us (owner of the `inbound_message` table)."""

from __future__ import annotations

from datetime import datetime

import asyncpg


async def record_inbound(
    db: asyncpg.Pool | asyncpg.Connection,
    *,
    message_sid: str,
    from_number: str,
    to_number: str,
    body: str,
    opt_out_type: str | None,
    received_at: datetime,
) -> int | None:
    """Store the message; return its id, or None when Twilio delivered the same one before."""
    return await db.fetchval(
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
