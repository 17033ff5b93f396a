"""Lists, the schedule view and series through the admin API: filters, keyset pagination, local
dates, audited reads, and series changes with If-Match."""

from __future__ import annotations

from datetime import date, timedelta

from tests.appointments.conftest import HART, PATEL, Desk, london, paths


async def test_list_filters_and_pages_in_start_order(desk: Desk) -> None:
    other = await desk.new_patient("Alan")
    ids = [
        await desk.appointment(london(date(2026, 3, 3) + timedelta(days=k)), status=status)
        for k, status in enumerate(["booked", "confirmed", "cancelled", "booked", "no_show"])
    ]
    theirs = await desk.appointment(london(date(2026, 3, 3), 11), patient_id=other)
    patel = await desk.appointment(london(date(2026, 3, 4), 15), practitioner_id=PATEL)

    async def listed(**params: object) -> list[int]:
        reply = await desk.api.call("GET", "/api/v1/appointments", role="clinician", params=params)
        assert reply.status == 200, reply.body
        return [item["id"] for item in reply.body["items"]]

    assert await listed() == [ids[0], theirs, ids[1], patel, *ids[2:]]
    assert await listed(patient_id=other) == [theirs]
    assert await listed(practitioner_id=PATEL) == [patel]
    assert await listed(status=["booked", "confirmed"], patient_id=desk.patient_id) == [
        ids[0],
        ids[1],
        patel,
        ids[3],
    ]
    assert await listed(**{"from": "2026-03-05", "to": "2026-03-06"}) == [ids[2], ids[3]]

    pages, cursor = [], None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        reply = await desk.api.call("GET", "/api/v1/appointments", role="admin", params=params)
        pages.append([item["id"] for item in reply.body["items"]])
        cursor = reply.body["next_cursor"]
        if cursor is None:
            break
    assert [i for page in pages for i in page] == await listed()
    assert all(len(page) <= 3 for page in pages)


async def test_list_rejects_bad_filters_by_name(desk: Desk) -> None:
    cases = {
        "cursor": {"cursor": "not-ours"},
        "to": {"from": "2026-03-05", "to": "2026-03-01"},
        "status": {"status": "lost"},
        "limit": {"limit": "0"},
        "from": {"from": "0001-01-01"},
        "practitioner_id": {"practitioner_id": "x"},
        "colour": {"colour": "red"},
    }
    for field, params in cases.items():
        reply = await desk.api.call("GET", "/api/v1/appointments", role="admin", params=params)
        assert reply.status == 422, (field, reply.body)
        assert field in paths(reply) or any(p.startswith(field) for p in paths(reply)), field


async def test_list_reads_are_audited_per_patient(desk: Desk) -> None:
    first = await desk.appointment(london(date(2026, 3, 3)))
    second = await desk.appointment(london(date(2026, 3, 4)))
    await desk.api.call("GET", "/api/v1/appointments", role="front_desk")
    logged = await desk.audit("appointment.read")
    assert len(logged) == 1 and logged[0]["patient_id"] == desk.patient_id
    assert logged[0]["details"] == {"via": "list", "appointment_ids": [first, second]}


async def test_schedule_day_and_week_in_local_time(desk: Desk) -> None:
    monday = date(2026, 3, 2)
    tue = await desk.appointment(london(monday + timedelta(days=1), 9, 30))
    thu = await desk.appointment(london(monday + timedelta(days=3), 14))
    gone = await desk.appointment(london(monday + timedelta(days=3), 15), status="cancelled")
    await desk.appointment(london(monday + timedelta(days=3), 16), practitioner_id=PATEL)
    path = f"/api/v1/practitioners/{HART}/schedule"

    day = await desk.api.call("GET", path, role="front_desk", params={"date": "2026-03-05"})
    assert day.status == 200, day.body
    assert day.body["view"] == "day" and day.body["time_zone"] == "Europe/London"
    [only] = day.body["days"]
    assert [(a["id"], a["local_time"]) for a in only["appointments"]] == [(thu, "14:00")]
    assert only["appointments"][0]["patient_name"] == "Ada Lovelace"
    assert only["appointments"][0]["treatment_name"] == "Consultation"

    week = await desk.api.call(
        "GET", path, role="clinician", params={"date": "2026-03-05", "view": "week"}
    )
    assert (week.body["first_day"], week.body["last_day"]) == ("2026-03-02", "2026-03-08")
    assert len(week.body["days"]) == 7
    by_day = {d["local_date"]: [a["id"] for a in d["appointments"]] for d in week.body["days"]}
    assert by_day["2026-03-03"] == [tue] and by_day["2026-03-05"] == [thu]
    with_cancelled = await desk.api.call(
        "GET", path, role="admin", params={"date": "2026-03-05", "include_cancelled": "true"}
    )
    assert [a["id"] for a in with_cancelled.body["days"][0]["appointments"]] == [thu, gone]


async def test_schedule_errors(desk: Desk) -> None:
    path = f"/api/v1/practitioners/{HART}/schedule"
    missing = await desk.api.call("GET", path, role="admin")
    assert missing.status == 422 and paths(missing) == {"date"}
    month = await desk.api.call(
        "GET", path, role="admin", params={"date": "2026-03-05", "view": "month"}
    )
    assert month.status == 422 and paths(month) == {"view"}
    nobody = await desk.api.call(
        "GET", "/api/v1/practitioners/999/schedule", role="admin", params={"date": "2026-03-05"}
    )
    assert nobody.status == 404


# -- series ----------------------------------------------------------------------------------------


async def test_series_detail_shows_sessions_gaps_and_warnings(desk: Desk) -> None:
    starts = [
        london(date(2026, 3, 3)),
        london(date(2026, 3, 10)),
        london(date(2026, 3, 23)),
        london(date(2026, 3, 30)),
    ]
    series_id, ids = await desk.course(
        starts, statuses=["completed", "booked", "cancelled", "booked"]
    )
    reply = await desk.api.call("GET", f"/api/v1/series/{series_id}", role="clinician")
    assert reply.status == 200, reply.body
    body = reply.body
    assert reply.headers["ETag"] == '"1"'
    assert body["treatment_name"] == "Hair mesotherapy course" and body["planned_sessions"] == 8
    assert [s["id"] for s in body["sessions"]] == ids
    assert [s["local_time"] for s in body["sessions"]] == ["10:00"] * 4  # 30 March is in BST
    assert body["sessions"][3]["starts_at"] == "2026-03-30T09:00:00Z"
    # The cancelled session 3 does not count: session 4 is 20 days after session 2.
    assert body["sessions"][2]["gap_before"] is None
    gap = body["sessions"][3]["gap_before"]
    assert (gap["earlier_position"], gap["days"]) == (2, 20)
    assert gap["problems"] == ["past_soft_maximum", "needs_clinician_review"]
    assert len(body["warnings"]) == 1 and len(body["review_notes"]) == 1
    logged = await desk.audit("series.read", series_id)
    assert logged[0]["patient_id"] == desk.patient_id


async def test_series_list_filters_and_pages(desk: Desk) -> None:
    first, _ = await desk.course([london(date(2026, 3, 3))])
    second, _ = await desk.course([london(date(2026, 3, 4))], code="prp-hair")
    await desk.pool.execute("UPDATE series SET status = 'paused' WHERE id = $1", second)
    reply = await desk.api.call("GET", "/api/v1/series", role="front_desk", params={"limit": "1"})
    assert [s["id"] for s in reply.body["items"]] == [first]
    after = await desk.api.call(
        "GET",
        "/api/v1/series",
        role="front_desk",
        params={"limit": "1", "cursor": reply.body["next_cursor"]},
    )
    assert [s["id"] for s in after.body["items"]] == [second]
    paused = await desk.api.call(
        "GET",
        "/api/v1/series",
        role="admin",
        params={"status": "paused", "patient_id": str(desk.patient_id)},
    )
    assert [s["id"] for s in paused.body["items"]] == [second]
    assert (await desk.api.call("GET", "/api/v1/series/999", role="admin")).status == 404


async def test_series_patch_notes_status_roles_and_if_match(desk: Desk) -> None:
    series_id, ids = await desk.course([london(date(2026, 3, 3)), london(date(2026, 3, 10))])
    path = f"/api/v1/series/{series_id}"

    async def patch(body: object, role: str = "clinician", version: str | None = '"1"'):  # type: ignore[no-untyped-def]
        headers = {"If-Match": version} if version else {}
        return await desk.api.call("PATCH", path, role=role, json=body, headers=headers)

    assert (await patch({"plan_notes": "x"}, version=None)).status == 428
    assert (await patch({"plan_notes": "x"}, version='"5"')).status == 412
    assert (await patch({"plan_notes": "x"}, role="front_desk")).status == 403
    empty = await patch({})
    assert empty.status == 422
    notes = await patch({"plan_notes": "  Lower dose from session 3.  "})
    assert notes.status == 200, notes.body
    assert notes.body["plan_notes"] == "Lower dose from session 3." and notes.body["version"] == 2
    assert notes.headers["ETag"] == '"2"'
    paused = await patch({"status": "paused"}, role="front_desk", version='"2"')
    assert paused.status == 200 and paused.body["status"] == "paused"
    logged = await desk.audit("series.update", series_id)
    assert logged[1]["details"]["changed"] == {"status": {"from": "active", "to": "paused"}}

    finished = await patch({"status": "completed"}, version='"3"')
    assert finished.status == 409 and finished.body["type"].endswith("/sessions-still-booked")
    assert finished.body["appointment_ids"] == ids
    cancel = await desk.act(ids[0], "cancel", json={"reason": "stop", "scope": "rest_of_course"})
    assert cancel.status == 200 and cancel.body["series_status"] == "cancelled"
    final = await patch({"status": "active"}, version='"4"')
    assert final.status == 409 and final.body["current_status"] == "cancelled"
    bad = await patch({"status": "finished"}, version='"4"')
    assert bad.status == 422 and paths(bad) == {"status"}
