"""A treatment's check-in plan (owner of `check_in_plan_step`): the questions asked after a
completed session, when, and what each numbered answer means (its tier).

Invariants: positions are unique per treatment; each step is timed either in elapsed hours
after completion or in local calendar days (at a local time, or at the session's own local
time); a plan is replaced whole (`replace`), so it is never half-edited.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import time
from typing import Any, Literal

from shared.store import Executor

Tier = Literal["fine", "routine", "urgent", "emergency"]
TIERS: tuple[Tier, ...] = ("fine", "routine", "urgent", "emergency")


@dataclass(frozen=True)
class Answer:
    digit: int
    label: str
    tier: Tier


@dataclass(frozen=True)
class StepSpec:
    """One step as written (the admin API's body, the seed)."""

    position: int
    question: str
    answers: list[Answer]
    offset_hours: int | None = None
    offset_days: int | None = None
    at_local_time: time | None = None
    fold_into_next_visit: bool = False
    nudge_after_hours: int = 24
    call_after_hours: int = 24


@dataclass(frozen=True)
class PlanStep(StepSpec):
    id: int = 0
    treatment_id: int = 0
    answers: list[Answer] = field(default_factory=list)


_COLUMNS = """id, treatment_id, position, offset_hours, offset_days, at_local_time, question,
    answers, fold_into_next_visit, nudge_after_hours, call_after_hours"""


def answers_from_json(raw: Any) -> list[Answer]:
    data = json.loads(raw) if isinstance(raw, str) else raw
    return [Answer(int(a["digit"]), str(a["label"]), a["tier"]) for a in data or []]


def answers_to_json(answers: Sequence[Answer]) -> list[dict[str, Any]]:
    """As stored (passed as text cast to jsonb, so it works on any connection, with or without
    the pool's jsonb codec)."""
    return [{"digit": a.digit, "label": a.label, "tier": a.tier} for a in answers]


def _step(row: Any) -> PlanStep:
    data = dict(row)
    data["answers"] = answers_from_json(data["answers"])
    return PlanStep(**data)


async def for_treatment(db: Executor, treatment_id: int) -> list[PlanStep]:
    """The plan's steps in position order (empty: no check-ins for this treatment)."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM check_in_plan_step WHERE treatment_id = $1 ORDER BY position",  # noqa: S608 - constant
        treatment_id,
    )
    return [_step(r) for r in rows]


async def replace(db: Executor, treatment_id: int, steps: Sequence[StepSpec]) -> list[PlanStep]:
    """The treatment's plan becomes `steps` (none: no check-ins). Check-ins already planned
    keep the question they were planned with."""
    await db.execute("DELETE FROM check_in_plan_step WHERE treatment_id = $1", treatment_id)
    for step in steps:
        await db.execute(
            """
            INSERT INTO check_in_plan_step (treatment_id, position, offset_hours, offset_days,
                at_local_time, question, answers, fold_into_next_visit, nudge_after_hours,
                call_after_hours)
            VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, $9, $10)
            """,
            treatment_id,
            step.position,
            step.offset_hours,
            step.offset_days,
            step.at_local_time,
            step.question,
            json.dumps(answers_to_json(step.answers)),
            step.fold_into_next_visit,
            step.nudge_after_hours,
            step.call_after_hours,
        )
    return await for_treatment(db, treatment_id)


# -- the seed (../shared/clinical-defaults.md, "Check-ins and escalation") ----------------------
#
# The handout numbers the answers of the first question (1 fine or mild tenderness; 2 swelling
# or bruising getting worse, or swelling around forehead or eyes; 3 fever, pus, spreading
# redness or severe pain) and says "same answers" at 72 h. Tiers from its triage table: 1 is
# fine; 3 names urgent triggers (fever, pus, spreading redness, severe pain); 2 is routine at
# 24 h (swelling and bruising are the expected reactions that subside within a few days) but
# urgent at 72 h ("worsening after 72 h" is an urgent trigger). The 7-day and late questions
# are yes/no in the handout: numbered here as 1 no, 2 not sure or a question (routine), 3 yes
# (urgent: infection signs; late lumps or draining spots may be a mycobacterial infection).
# Breathing trouble and swelling of lips, tongue or throat is never a numbered answer: every
# message says to call the emergency number, and words in a reply are read for it.

_SCALP_24H = (
    "How is your scalp? 1 fine or mild tenderness, 2 swelling or bruising getting worse, or "
    "swelling around forehead or eyes, 3 fever, pus, spreading redness or severe pain"
)
_SCALP_72H = (
    "Swelling and bruising should be fading. How is your scalp? 1 fine or mild tenderness, "
    "2 swelling or bruising getting worse, or swelling around forehead or eyes, 3 fever, pus, "
    "spreading redness or severe pain"
)
_DAY_7 = (
    "Infection check: do you have fever, pus, red streaks, a hot lump or increasing pain? "
    "1 no, 2 not sure or a question, 3 yes"
)
_LATE = (
    "Any new lumps, nodules, draining spots or patchy hair loss where you were treated? "
    "1 no, 2 not sure or a question, 3 yes"
)


def _scalp_answers(two: Tier) -> list[Answer]:
    return [
        Answer(1, "fine or mild tenderness", "fine"),
        Answer(2, "swelling or bruising getting worse, or swelling around forehead or eyes", two),
        Answer(3, "fever, pus, spreading redness or severe pain", "urgent"),
    ]


def _yes_no_answers() -> list[Answer]:
    return [
        Answer(1, "no", "fine"),
        Answer(2, "not sure, or a question", "routine"),
        Answer(3, "yes", "urgent"),
    ]


DEFAULT_PLAN: tuple[StepSpec, ...] = (
    StepSpec(1, _SCALP_24H, _scalp_answers("routine"), offset_hours=24),
    StepSpec(2, _SCALP_72H, _scalp_answers("urgent"), offset_hours=72),
    StepSpec(3, _DAY_7, _yes_no_answers(), offset_days=7),
    # 21-28 days: asked on day 21, so the answer (or the call) still falls inside the window
    StepSpec(4, _LATE, _yes_no_answers(), offset_days=21),
)
