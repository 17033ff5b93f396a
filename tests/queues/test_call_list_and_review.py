"""The call list and the clinician review queue through the real HTTP API."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

from tests.queues.conftest import MOBILE, Queues, london

CALLS = "/api/v1/call-list"
REVIEW = "/api/v1/review-queue"


# -- the call list ---------------------------------------------------------------------------------


async def test_the_call_list_shows_whom_to_phone_oldest_first_in_the_clinics_time(
    queues: Queues,
) -> None:
    # 10:00 in London in June is 09:00 UTC: the desk reads the clinic's clock.
    summer = london(date(2026, 6, 16), 10)
    first = await queues.appointment(summer)
    second = await queues.appointment(summer + timedelta(days=7))
    newer = await queues.call_task(first, reason="not_confirmed", detail="48 h, not confirmed")
    older = await queues.call_task(
        second,
        reason="reschedule_requested",
        detail="replied R",
        at=queues.now - timedelta(hours=2),
    )

    reply = await queues.call("GET", CALLS)

    assert reply.status == 200, reply.body
    assert [t["id"] for t in reply.body["items"]] == [older, newer]
    entry = reply.body["items"][1]
    assert entry["patient"] == {
        "id": queues.patient_id,
        "first_name": "Ada",
        "last_name": "Lovelace",
    }
    assert entry["mobile"] == "+44 **** ***456" and MOBILE not in str(reply.body)
    assert entry["appointment"]["local_time"] == "10:00"
    assert entry["appointment"]["starts_at"].startswith("2026-06-16T09:00")
    assert entry["appointment"]["time_zone"] == "Europe/London"
    assert (entry["reason"], entry["detail"]) == ("not_confirmed", "48 h, not confirmed")
    [read] = await queues.audit("call_list.read")
    assert read["patient_id"] == queues.patient_id
    assert read["details"]["call_task_ids"] == [older, newer]


async def test_a_done_call_leaves_the_list_with_its_outcome_and_cannot_be_closed_twice(
    queues: Queues,
) -> None:
    task = await queues.call_task(await queues.appointment(london(date(2026, 3, 10))))

    done = await queues.call("POST", f"{CALLS}/{task}/done", json={"outcome": "confirmed by phone"})

    assert done.status == 200, done.body
    assert done.body["outcome"] == "confirmed by phone" and done.body["done_at"] is not None
    assert (await queues.call("GET", CALLS)).body["items"] == []
    closed = await queues.call("GET", CALLS, params={"status": "done"})
    assert [t["id"] for t in closed.body["items"]] == [task]
    again = await queues.call("POST", f"{CALLS}/{task}/done", json={"outcome": "again"})
    assert again.status == 409 and again.body["type"].endswith("/already-done")
    [audit] = await queues.audit("call_task.done")
    assert audit["reason"] == "confirmed by phone" and audit["entity_id"] == task
    assert (await queues.call("POST", f"{CALLS}/99999/done", json={"outcome": "x"})).status == 404


async def test_the_call_list_is_the_desks(queues: Queues) -> None:
    task = await queues.call_task(await queues.appointment(london(date(2026, 3, 10))))
    assert (await queues.call("GET", CALLS, role="clinician")).status == 403
    reply = await queues.call(
        "POST", f"{CALLS}/{task}/done", role="clinician", json={"outcome": "x"}
    )
    assert reply.status == 403
    assert (await queues.call("GET", CALLS, role="admin")).status == 200


async def test_a_clinic_filter_and_status_all(queues: Queues) -> None:
    a = await queues.call_task(await queues.appointment(london(date(2026, 3, 10))))
    b = await queues.call_task(await queues.appointment(london(date(2026, 3, 11))))
    await queues.call("POST", f"{CALLS}/{a}/done", json={"outcome": "left a voicemail"})
    everything = await queues.call(
        "GET", CALLS, params={"status": "all", "clinic_id": str(queues.clinic_id)}
    )
    assert [t["id"] for t in everything.body["items"]] == [a, b]
    assert (await queues.call("GET", CALLS, params={"clinic_id": "999"})).body["items"] == []


# -- the review queue ------------------------------------------------------------------------------


async def test_the_review_queue_groups_flagged_active_sessions_by_patient_and_course(
    queues: Queues,
) -> None:
    day = date(2026, 3, 10)
    series_id, sessions = await queues.course(
        [london(day + timedelta(weeks=w)) for w in range(4)],
        flagged=(2, 3, 4),
        statuses=["booked", "booked", "booked", "cancelled"],
    )
    grace = await queues.new_patient("Grace")
    single = await queues.appointment(
        london(day, 9), patient_id=grace, needs_review=True, review_reasons=["form: allergies"]
    )

    reply = await queues.call("GET", REVIEW, role="clinician")

    assert reply.status == 200, reply.body
    groups = reply.body["items"]
    # Grace's single visit is soonest; Ada's course follows with its two flagged active sessions
    # (the cancelled one needs no review).
    assert [(g["patient"]["id"], g["series_id"]) for g in groups] == [
        (grace, None),
        (queues.patient_id, series_id),
    ]
    assert [a["id"] for a in groups[0]["appointments"]] == [single]
    assert [a["id"] for a in groups[1]["appointments"]] == [sessions[1], sessions[2]]
    assert groups[1]["appointments"][0]["review_reasons"] == ["screening: on blood thinners"]
    reads = await queues.audit("appointment.read")
    assert {r["patient_id"] for r in reads if r["details"]["via"] == "review_queue"} == {
        grace,
        queues.patient_id,
    }


async def test_the_review_queue_pages_by_group(queues: Queues) -> None:
    day = date(2026, 3, 10)
    await queues.course([london(day), london(day + timedelta(weeks=1))], flagged=(1, 2))
    grace = await queues.new_patient("Grace")
    await queues.course([london(day, 14)], patient_id=grace, flagged=(1,))
    first = await queues.call("GET", REVIEW, role="admin", params={"limit": "1"})
    assert len(first.body["items"]) == 1 and first.body["next_cursor"]
    second = await queues.call(
        "GET", REVIEW, role="admin", params={"limit": "1", "cursor": first.body["next_cursor"]}
    )
    assert second.body["next_cursor"] is None
    patients = [g["patient"]["id"] for g in first.body["items"] + second.body["items"]]
    assert patients == [queues.patient_id, grace]
    assert len(first.body["items"][0]["appointments"]) == 2


async def test_the_front_desk_has_no_review_queue(queues: Queues) -> None:
    series_id, _ = await queues.course([london(date(2026, 3, 10))], flagged=(1,))
    assert (await queues.call("GET", REVIEW)).status == 403
    review = await queues.call("POST", f"/api/v1/series/{series_id}/review", json={"note": "ok"})
    assert review.status == 403


async def test_clearing_a_course_clears_every_flagged_active_session_in_one_audited_action(
    queues: Queues,
) -> None:
    day = date(2026, 3, 10)
    series_id, sessions = await queues.course(
        [london(day + timedelta(weeks=w)) for w in range(4)],
        flagged=(1, 3, 4),
        statuses=["booked", "booked", "confirmed", "cancelled"],
    )

    reply = await queues.call(
        "POST",
        f"/api/v1/series/{series_id}/review",
        role="clinician",
        json={"note": "anticoagulant paused, fine to treat"},
    )

    assert reply.status == 200, reply.body
    assert [a["id"] for a in reply.body["cleared"]] == [sessions[0], sessions[2]]
    assert all(a["needs_review"] is False for a in reply.body["cleared"])
    flags = dict(
        await queues.pool.fetch(
            "SELECT id, needs_review FROM appointment WHERE series_id = $1", series_id
        )
    )
    # The cancelled session keeps its flag: it was not reviewed, nothing is cleared behind
    # the clinician's back.
    assert flags == {sessions[0]: False, sessions[1]: False, sessions[2]: False, sessions[3]: True}
    per_session = await queues.audit("appointment.review")
    assert [r["entity_id"] for r in per_session] == [sessions[0], sessions[2]]
    assert {r["reason"] for r in per_session} == {"anticoagulant paused, fine to treat"}
    assert per_session[0]["details"]["cleared_reasons"] == ["screening: on blood thinners"]
    [course] = await queues.audit("series.review")
    assert course["entity_id"] == series_id
    assert course["details"]["appointment_ids"] == [sessions[0], sessions[2]]
    assert (await queues.call("GET", REVIEW, role="clinician")).body["items"] == []
    # The check-in that the flag blocked is possible again (the clinician's note in history).
    history = await queues.call("GET", f"/api/v1/appointments/{sessions[0]}", role="clinician")
    assert history.body["history"][-1]["reason"] == "anticoagulant paused, fine to treat"

    again = await queues.call(
        "POST", f"/api/v1/series/{series_id}/review", role="clinician", json={"note": "again"}
    )
    assert again.status == 409 and again.body["type"].endswith("/nothing-to-review")
    assert len(await queues.audit("series.review")) == 1


async def test_reviewing_an_unknown_course_is_a_404(queues: Queues) -> None:
    reply = await queues.call(
        "POST", "/api/v1/series/99999/review", role="clinician", json={"note": "ok"}
    )
    assert reply.status == 404


async def test_two_people_closing_one_call_close_it_once(queues: Queues) -> None:
    task = await queues.call_task(await queues.appointment(london(date(2026, 3, 10))))
    replies = await asyncio.gather(
        *(
            queues.call("POST", f"{CALLS}/{task}/done", role=role, json={"outcome": role})
            for role in ("front_desk", "admin", "front_desk")
        )
    )
    assert sorted(r.status for r in replies) == [200, 409, 409]
    assert len(await queues.audit("call_task.done")) == 1


async def test_two_clinicians_clearing_one_course_at_once_clear_it_once(queues: Queues) -> None:
    day = date(2026, 3, 10)
    series_id, _ = await queues.course(
        [london(day + timedelta(weeks=w)) for w in range(3)], flagged=(1, 2, 3)
    )
    path = f"/api/v1/series/{series_id}/review"
    replies = await asyncio.gather(
        queues.call("POST", path, role="clinician", json={"note": "one"}),
        queues.call("POST", path, role="admin", json={"note": "two"}),
    )
    assert sorted(r.status for r in replies) == [200, 409]
    assert len(await queues.audit("appointment.review")) == 3
    assert len(await queues.audit("series.review")) == 1
