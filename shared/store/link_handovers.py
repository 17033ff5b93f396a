"""Link handovers (owner of `link_handover`): which browser's contact change last replaced a
patient's private link, so that the same browser submitting again from the replaced link's page
a moment later is carried on at the current link (services/booking/web/self_visit.py).

Invariants: one row per patient, the latest change (`record` replaces it); the browser is kept
only as a keyed hash of its session cookie; a row answers only for the link version it replaced,
that browser, and a short while (`handed_over`'s `since`).
"""

from __future__ import annotations

from datetime import datetime

from shared.store import Executor


async def record(
    db: Executor, patient_id: int, *, from_version: int, session_hash: bytes, now: datetime
) -> None:
    await db.execute(
        """
        INSERT INTO link_handover (patient_id, from_version, session_hash, created_at)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (patient_id) DO UPDATE
            SET from_version = EXCLUDED.from_version, session_hash = EXCLUDED.session_hash,
                created_at = EXCLUDED.created_at
        """,
        patient_id,
        from_version,
        session_hash,
        now,
    )


async def handed_over(
    db: Executor, patient_id: int, *, from_version: int, session_hash: bytes, since: datetime
) -> bool:
    """Whether this browser's own contact change replaced link version `from_version` of the
    patient at `since` or later."""
    found = await db.fetchval(
        """
        SELECT 1 FROM link_handover
        WHERE patient_id = $1 AND from_version = $2 AND session_hash = $3 AND created_at >= $4
        """,
        patient_id,
        from_version,
        session_hash,
        since,
    )
    return found is not None
