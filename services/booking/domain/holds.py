"""Holds: one slot or a whole course reserved while the patient types (10 minutes by default).

A hold's token is its only credential: unguessable without the secret key, derivable again from
the hold's id (so an idempotent retry can be answered) while the database keeps only its hash.
A hold is whole or gone: if any of its sessions was cancelled, it is re-taken like an expired
one, all sessions or none.

A hold taken by the booking pages remembers the browser session that took it (a keyed hash of
the pages' session cookie, never the cookie). That session asking again for the very same times
while its hold runs (a double click, Back then submit) gets that same hold back, not a refusal
caused by its own hold and not a second hold; the same session asking for other times of the
same treatment has its previous hold given back in the same transaction as the new one is taken
(a patient going Back to choose another time wants the new time, not both), so that if the new
times are taken the old hold stands. Another session is refused as before.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.booking.domain import limits
from services.booking.domain.errors import HoldFinished, HoldNotFound, HoldState, SlotsTaken
from services.booking.domain.offers import Executor, Offer, check_session_count, load_offer
from services.booking.domain.sessions import (
    PlannedSession,
    SessionRequest,
    find_conflicts,
    insert_sessions,
    plan_sessions,
)
from shared.store import appointments, audit
from shared.store import holds as hold_store
from shared.store.appointments import Appointment
from shared.store.audit import Actor
from shared.store.holds import Hold, NewHold

TokenFor = Callable[[int], str]


def hold_token(secret: str, hold_id: int) -> str:
    """The hold's token: unguessable without the secret key, and derivable again from the id, so
    an idempotent retry can be answered while the database keeps only its hash."""
    mac = hmac.new(secret.encode(), f"regimen-hold:{hold_id}".encode(), hashlib.sha256).digest()
    return "hold_" + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class HoldCreated:
    hold_id: int
    token: str
    expires_at: datetime
    appointment_ids: list[int]
    sessions: list[PlannedSession]
    # The session's own running hold on exactly these times, answered again (nothing written).
    repeated: bool = False


def _times(pairs: Sequence[tuple[int, datetime]]) -> list[tuple[int, datetime]]:
    return sorted(pairs, key=lambda p: (p[1], p[0]))


async def serialise_session(conn: asyncpg.Connection, session: bytes) -> None:
    """Queue, until the transaction ends, behind any other hold request of this browser session
    (taken first by anything that releases one of the session's holds before taking another,
    so the two orders never deadlock)."""
    await hold_store.lock_session(conn, session)


async def held_by_session(
    db: Executor, offer: Offer, session: bytes | None, *, now: datetime
) -> list[int]:
    """The appointments this browser session holds for the offer's treatment. The pages show
    them free to that browser again (Back, then a reload of the picker), since holding the same
    times again returns its own hold and other times replace it; to anyone else they stay taken."""
    if session is None:
        return []
    held: list[int] = []
    for hold in await hold_store.running_for_session(db, session, offer.treatment.id, now=now):
        held.extend(r.id for r in await appointments.for_hold(db, hold.id) if r.status == "held")
    return held


async def _session_hold(
    conn: asyncpg.Connection,
    offer: Offer,
    session: bytes,
    planned: Sequence[PlannedSession],
    *,
    token_for: TokenFor,
    now: datetime,
    actor: Actor,
    request_id: str | None,
) -> HoldCreated | None:
    """The session's running hold on exactly `planned`, if it has one; its other running holds
    of this treatment are given back (replaced by the one about to be taken)."""
    wanted = _times([(s.practitioner_id, s.start) for s in planned])
    found = None
    for hold in await hold_store.running_for_session(conn, session, offer.treatment.id, now=now):
        rows = await appointments.for_hold(conn, hold.id)
        same = _times([(r.practitioner_id, r.starts_at) for r in rows]) == wanted
        if found is None and same and hold_state(hold, rows, now) == "active":
            found = HoldCreated(
                hold.id,
                token_for(hold.id),
                hold.expires_at,
                [r.id for r in rows],
                list(planned),
                repeated=True,
            )
            continue
        await _end_hold(
            conn,
            hold.id,
            rows,
            now=now,
            actor=actor,
            request_id=request_id,
            why="replaced by another hold of the same browser",
        )
    return found


async def create_hold(
    conn: asyncpg.Connection,
    offer: Offer,
    requests: Sequence[SessionRequest],
    *,
    token_for: TokenFor,
    now: datetime,
    actor: Actor,
    request_id: str | None,
    client: bytes | None = None,
    session: bytes | None = None,
) -> HoldCreated:
    """Hold one slot, a whole course, or a course's first session alone (all sessions
    re-checked here, whatever the form said).

    `client` (the client address's keyed hash) is recorded on the hold and caps the holds one
    client address may have running (TooMany beyond REGIMEN_HOLDS_PER_ADDRESS). `session` (the
    browser session's keyed hash) is recorded too: the session's running hold on exactly these
    times is answered again (`repeated`), its other running holds of this treatment are released
    first (see the module's docstring); concurrent requests of one session queue on a lock."""
    check_session_count(offer.treatment, len(requests), "sessions", first_only=True)
    plan = plan_sessions(
        offer, requests, first_position=1, previous=None, strict=True, override_reason=None
    )
    if session is not None:
        await serialise_session(conn, session)
        again = await _session_hold(
            conn,
            offer,
            session,
            plan.sessions,
            token_for=token_for,
            now=now,
            actor=actor,
            request_id=request_id,
        )
        if again is not None:
            return again
    if client is not None:
        # After the session's replaced holds were released: they free their place under the cap.
        await limits.limit_holds(conn, client, now=now)
    conflicts = await find_conflicts(conn, offer, plan.sessions, now)
    if conflicts:
        raise SlotsTaken(offer, conflicts, now)
    expires_at = now + offer.clinic.hold_time
    # The token derives from the id; a random placeholder keeps the unique hash column happy
    # for the moment between the two statements.
    new = NewHold(
        clinic_id=offer.clinic.id,
        treatment_id=offer.treatment.id,
        token_hash=secrets.token_bytes(32),
        expires_at=expires_at,
        client_hash=client,
        session_hash=session,
    )
    hold_id = await hold_store.insert(conn, new, now=now)
    token = token_for(hold_id)
    await hold_store.set_token_hash(conn, hold_id, token_hash(token))
    ids = await insert_sessions(
        conn,
        offer,
        plan.sessions,
        status="held",
        patient_id=None,
        series_id=None,
        hold_id=hold_id,
        needs_review=False,
        review_reasons=[],
        source="public",
        actor=actor,
        now=now,
        request_id=request_id,
    )
    await audit.insert(
        conn,
        at=now,
        actor=actor,
        action="hold.create",
        entity="booking_hold",
        entity_id=hold_id,
        details={"treatment_id": offer.treatment.id, "appointment_ids": ids},
        request_id=request_id,
    )
    return HoldCreated(hold_id, token, expires_at, ids, plan.sessions)


@dataclass(frozen=True)
class HoldView:
    hold: Hold
    state: HoldState
    offer: Offer | None
    sessions: list[Appointment]


def hold_state(hold: Hold, rows: Sequence[Appointment], now: datetime) -> HoldState:
    if any(row.patient_id is not None for row in rows):
        return "booked"
    if hold.released_at is not None:
        return "released"
    # A hold is whole or gone: if any of its rows was cancelled it is re-taken like an
    # expired one, all sessions or none.
    if hold.expires_at <= now or not rows or any(row.status != "held" for row in rows):
        return "expired"
    return "active"


def _shown_sessions(rows: Sequence[Appointment], state: HoldState) -> list[Appointment]:
    if state == "booked":
        return [row for row in rows if row.patient_id is not None]
    return list(rows)


async def hold_view(
    db: Executor, token: str, now: datetime, *, for_update: bool = False
) -> HoldView | None:
    """The hold of this token with its sessions and state (None: no such hold); `for_update`
    locks the hold row for the caller's transaction."""
    hashed = token_hash(token)
    if for_update:
        hold = await hold_store.lock_by_token_hash(db, hashed)
    else:
        hold = await hold_store.by_token_hash(db, hashed)
    if hold is None:
        return None
    rows = await appointments.for_hold(db, hold.id)
    state = hold_state(hold, rows, now)
    offer = await load_offer(db, hold.treatment_id, public=False)
    return HoldView(hold, state, offer, _shown_sessions(rows, state))


async def release_hold(
    conn: asyncpg.Connection, token: str, *, now: datetime, actor: Actor, request_id: str | None
) -> None:
    """Give the held times back at once (releasing twice is fine; a booked hold is a 409)."""
    view = await hold_view(conn, token, now, for_update=True)
    if view is None:
        raise HoldNotFound()
    if view.state == "booked":
        raise HoldFinished(view.hold, view.state, view.offer, now)
    if view.state == "released":
        return
    await _end_hold(conn, view.hold.id, view.sessions, now=now, actor=actor, request_id=request_id)


async def _end_hold(
    conn: asyncpg.Connection,
    hold_id: int,
    rows: Sequence[Appointment],
    *,
    now: datetime,
    actor: Actor,
    request_id: str | None,
    why: str = "",
) -> None:
    """End a hold that is not booked, its held times free again at once."""
    await hold_store.end(conn, hold_id, now=now)
    for row in rows:
        if row.status == "held":
            await appointments.transition(
                conn, row.id, "cancelled", actor=actor.label, now=now, reason="hold released"
            )
    await audit.insert(
        conn,
        at=now,
        actor=actor,
        action="hold.release",
        entity="booking_hold",
        entity_id=hold_id,
        reason=why,
        request_id=request_id,
    )
