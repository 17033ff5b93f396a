"""The scheduler's sweeps. Each one is a small function over the pool and the clock; every
durable fact lives in our tables, so any number of scheduler replicas may run them (each
function's docstring says why, under "Replicas:")."""

from __future__ import annotations

from datetime import timedelta

from services.scheduler.call_list import CALL_UNCONFIRMED
from services.scheduler.check_in_follow_up import FOLLOW_UP_CHECK_INS
from services.scheduler.courses import COMPLETE_COURSES, FILE_OVERDUE_GAPS
from services.scheduler.escalations import ESCALATE_ALERTS
from services.scheduler.holds import EXPIRE_HOLDS
from services.scheduler.no_shows import mark_no_shows
from services.scheduler.proposals import proposal_sweeps
from shared.config import Settings
from shared.sweeps import Sweep

DEFAULT_SWEEPS: list[Sweep] = [
    EXPIRE_HOLDS,
    # No-shows are decided a grace period after the end; once a minute is plenty.
    Sweep("mark-no-shows", timedelta(seconds=60), mark_no_shows),
    CALL_UNCONFIRMED,
    # Course progression: a finished course completes (and plans its maintenance reminder);
    # an overdue next session goes on the call list.
    COMPLETE_COURSES,
    FILE_OVERDUE_GAPS,
    # Staff alerts nobody acknowledged in time go to the next person on the list.
    ESCALATE_ALERTS,
    # Aftercare check-ins: nudge, re-ask on another channel, or put on the call list.
    FOLLOW_UP_CHECK_INS,
]


def default_sweeps(settings: Settings) -> list[Sweep]:
    """Every sweep the scheduler runs, with those that take settings (next-session proposals:
    how long a proposed time is held)."""
    return [*DEFAULT_SWEEPS, *proposal_sweeps(settings.proposal_hold)]
