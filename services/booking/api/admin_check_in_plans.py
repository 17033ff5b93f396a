"""A treatment's aftercare check-in plan: the questions asked after a completed session, when,
and what each numbered answer means (its tier: fine, routine, urgent, emergency).

Roles: every staff role reads it; clinicians and admins replace it (it is clinical content).
PUT replaces the whole plan (an empty list: no check-ins); check-ins already planned keep the
question they were planned with.

When a step is asked: `offset_hours` after completion (elapsed time: "24 h after"), or
`offset_days` local calendar days later at `at_local_time` (null: the session's own local
time), so "7 days later" stays at the same local hour across a clock change. Either way a time
inside the clinic's quiet hours moves to the window's opening.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import asyncpg
from pydantic import BaseModel, Field, StringConstraints

from services.booking.api import API
from services.booking.api.common import ALL_STAFF, or_not_found, record, write
from services.booking.api.fields import Body, LocalTime
from services.booking.api.framework import Ctx, invalid
from shared.store import check_in_plans, treatments
from shared.store.check_in_plans import Answer, StepSpec
from shared.store.staff_tokens import Role

CLINICAL: tuple[Role, ...] = ("admin", "clinician")
TierName = Literal["fine", "routine", "urgent", "emergency"]
Question = Annotated[str, StringConstraints(min_length=1, max_length=600, pattern=r"\S")]
Label = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S")]
Hours = Annotated[int, Field(ge=1, le=336)]


class PlanAnswer(Body):
    digit: int = Field(ge=1, le=9, description="what the patient replies")
    label: Label
    tier: TierName


class PlanStepBody(Body):
    position: int = Field(ge=1, le=20)
    offset_hours: int | None = Field(
        default=None, ge=1, le=2160, description="elapsed hours after completion"
    )
    offset_days: int | None = Field(
        default=None, ge=1, le=365, description="local calendar days after completion"
    )
    at_local_time: LocalTime | None = Field(
        default=None, description="with offset_days; null: the session's own local time"
    )
    question: Question = Field(description="asked as written, in SMS and email")
    answers: list[PlanAnswer] = Field(min_length=1, max_length=9)
    # Asking the step with the next session's pre-visit questions instead is not built yet:
    # every step is sent on its own, so the flag may only be false (it is refused, not ignored).
    fold_into_next_visit: Literal[False] = Field(
        default=False,
        description="reserved: always false (folding a check-in into the next session's "
        "pre-visit questions is not available; every check-in is sent on its own)",
    )
    nudge_after_hours: Hours = Field(default=24, description="no answer: one nudge after this")
    call_after_hours: Hours = Field(default=24, description="then a call task this long after")


class CheckInPlanPut(Body):
    steps: list[PlanStepBody] = Field(max_length=20)


class CheckInPlan(BaseModel):
    treatment_id: int
    steps: list[PlanStepBody]


def _check(body: CheckInPlanPut) -> None:
    seen: set[int] = set()
    for index, step in enumerate(body.steps):
        path = f"steps.{index}"
        if step.position in seen:
            raise invalid(f"{path}.position", f"position {step.position} appears twice")
        seen.add(step.position)
        if (step.offset_hours is None) == (step.offset_days is None):
            raise invalid(path, "give exactly one of offset_hours and offset_days")
        if step.at_local_time is not None and step.offset_days is None:
            raise invalid(f"{path}.at_local_time", "only with offset_days")
        digits: set[int] = set()
        for n, answer in enumerate(step.answers):
            if answer.digit in digits:
                raise invalid(f"{path}.answers.{n}.digit", f"digit {answer.digit} appears twice")
            digits.add(answer.digit)


def _view(treatment_id: int, steps: list[check_in_plans.PlanStep]) -> CheckInPlan:
    return CheckInPlan(
        treatment_id=treatment_id,
        steps=[
            PlanStepBody(
                position=s.position,
                offset_hours=s.offset_hours,
                offset_days=s.offset_days,
                at_local_time=s.at_local_time,
                question=s.question,
                answers=[PlanAnswer(digit=a.digit, label=a.label, tier=a.tier) for a in s.answers],
                fold_into_next_visit=s.fold_into_next_visit,
                nudge_after_hours=s.nudge_after_hours,
                call_after_hours=s.call_after_hours,
            )
            for s in steps
        ],
    )


@API.route(
    "GET",
    "/api/v1/treatments/{treatment_id}/check-in-plan",
    summary="A treatment's aftercare check-in plan",
    tag="treatments",
    roles=ALL_STAFF,
    response=CheckInPlan,
    errors=(404,),
)
async def get_check_in_plan(ctx: Ctx) -> CheckInPlan:
    treatment_id = ctx.path["treatment_id"]
    or_not_found(await treatments.get(ctx.pool, treatment_id), "treatment", treatment_id)
    return _view(treatment_id, await check_in_plans.for_treatment(ctx.pool, treatment_id))


@API.route(
    "PUT",
    "/api/v1/treatments/{treatment_id}/check-in-plan",
    summary="Replace a treatment's aftercare check-in plan",
    tag="treatments",
    roles=CLINICAL,
    body=CheckInPlanPut,
    response=CheckInPlan,
    errors=(404,),
)
async def put_check_in_plan(ctx: Ctx) -> CheckInPlan:
    """The whole plan; a 422 names the bad field (`steps.1.offset_days`)."""
    treatment_id = ctx.path["treatment_id"]
    body: CheckInPlanPut = ctx.body
    _check(body)
    specs = [
        StepSpec(
            position=s.position,
            question=s.question,
            answers=[Answer(a.digit, a.label, a.tier) for a in s.answers],
            offset_hours=s.offset_hours,
            offset_days=s.offset_days,
            at_local_time=s.at_local_time,
            fold_into_next_visit=s.fold_into_next_visit,
            nudge_after_hours=s.nudge_after_hours,
            call_after_hours=s.call_after_hours,
        )
        for s in sorted(body.steps, key=lambda s: s.position)
    ]

    async def work(conn: asyncpg.Connection) -> Any:
        or_not_found(await treatments.lock(conn, treatment_id), "treatment", treatment_id)
        before = _view(treatment_id, await check_in_plans.for_treatment(conn, treatment_id))
        after = _view(treatment_id, await check_in_plans.replace(conn, treatment_id, specs))
        await record(
            conn,
            ctx,
            action="check_in_plan.replace",
            entity="treatment",
            entity_id=treatment_id,
            details={
                "from": before.model_dump(mode="json")["steps"],
                "to": after.model_dump(mode="json")["steps"],
            },
        )
        return after

    plan: CheckInPlan = await write(ctx, work)
    return plan
