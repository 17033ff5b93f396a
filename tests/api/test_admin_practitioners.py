"""Practitioners and their schedules through the admin API: roles, weekly hours, time off, day
overrides, removal that keeps history, If-Match races, pagination and audit."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg

from shared.store import practitioners, schedule_overrides, time_off, working_hours
from tests import factories
from tests.conftest import BookingApi, Reply

HART = 1  # the demo practitioners: Dr Hart works Monday to Friday, Dr Patel Tuesday to Saturday
WEEK = [
    {"weekday": 1, "starts": "09:00", "ends": "12:30"},
    {"weekday": 1, "starts": "13:30", "ends": "17:00"},
    {"weekday": 3, "starts": "10:00", "ends": "13:00"},
    {"weekday": 3, "starts": "12:00", "ends": "15:00"},  # overlaps the one before it
]


def paths(reply: Reply) -> set[str]:
    return {error["path"] for error in reply.body["errors"]}


async def audit_actions(pool: asyncpg.Pool, practitioner_id: int) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """
        SELECT action, details, actor_name FROM audit_log
        WHERE entity = 'practitioner' AND entity_id = $1 ORDER BY id
        """,
        practitioner_id,
    )
    return [dict(r) for r in rows]


async def book(
    api: BookingApi, practitioner_id: int, starts: datetime, status: str = "booked"
) -> int:
    """An appointment straight in the database: the booking API is not what is under test."""
    patient_id = await factories.patient(
        api.pool,
        clinic_id=api.clinic_id,
        first_name="Test",
        last_name="Patient",
        now=api.clock.now(),
    )
    treatment_id = await api.pool.fetchval("SELECT id FROM treatment WHERE code = 'consultation'")
    return await factories.appointment(
        api.pool,
        clinic_id=api.clinic_id,
        practitioner_id=practitioner_id,
        treatment_id=treatment_id,
        patient_id=patient_id,
        starts_at=starts,
        now=api.clock.now(),
        status=status,  # type: ignore[arg-type]
    )


async def new_practitioner(api: BookingApi, name: str = "Dr Nia Okafor") -> dict[str, Any]:
    reply = await api.call(
        "POST",
        "/api/v1/practitioners",
        role="admin",
        json={"clinic_id": api.clinic_id, "name": name, "email": "nia@example.com"},
    )
    assert reply.status == 201, reply.body
    return dict(reply.body)


# -- roles -----------------------------------------------------------------------------------------


async def test_only_admin_manages_practitioners(booking_api: BookingApi) -> None:
    body = {"clinic_id": booking_api.clinic_id, "name": "Dr New"}
    one = f"/api/v1/practitioners/{HART}"
    for role in ("front_desk", "clinician"):
        assert (await booking_api.call("GET", "/api/v1/practitioners", role=role)).status == 200
        assert (await booking_api.call("GET", one, role=role)).status == 200
        assert (
            await booking_api.call("POST", "/api/v1/practitioners", role=role, json=body)
        ).status == 403
        patch = await booking_api.call(
            "PATCH", one, role=role, json={"name": "Dr X"}, headers={"If-Match": '"1"'}
        )
        assert patch.status == 403
        assert (await booking_api.call("DELETE", one, role=role)).status == 403
    assert (await booking_api.call("GET", "/api/v1/practitioners")).status == 401
    assert (await booking_api.call("DELETE", one)).status == 401
    assert (await booking_api.call("GET", one, role="admin")).body["name"] == "Dr Amelia Hart"


async def test_front_desk_manages_schedules_and_clinicians_only_read_them(
    booking_api: BookingApi,
) -> None:
    base = f"/api/v1/practitioners/{HART}"
    week = [{"weekday": 2, "starts": "09:00", "ends": "17:00"}]
    off = {"starts_at": "2026-03-10T09:00:00Z", "ends_at": "2026-03-10T17:00:00Z"}
    override = {"day": "2026-03-11", "ranges": []}

    for path in ("/hours", "/time-off", "/overrides"):
        assert (await booking_api.call("GET", base + path, role="clinician")).status == 200
    denied = [
        await booking_api.call(
            "PUT",
            base + "/hours",
            role="clinician",
            json={"hours": week},
            headers={"If-Match": '"1"'},
        ),
        await booking_api.call("POST", base + "/time-off", role="clinician", json=off),
        await booking_api.call("PUT", base + "/overrides", role="clinician", json=override),
        await booking_api.call(
            "DELETE", base + "/overrides", role="clinician", params={"day": "2026-03-11"}
        ),
    ]
    assert [r.status for r in denied] == [403, 403, 403, 403]
    assert (await booking_api.call("GET", base + "/hours")).status == 401

    hours = await booking_api.call(
        "PUT", base + "/hours", role="front_desk", json={"hours": week}, headers={"If-Match": '"1"'}
    )
    assert hours.status == 200
    created = await booking_api.call("POST", base + "/time-off", role="front_desk", json=off)
    assert created.status == 201
    assert (
        await booking_api.call("PUT", base + "/overrides", role="front_desk", json=override)
    ).status == 200
    delete_off = await booking_api.call(
        "DELETE", f"{base}/time-off/{created.body['id']}", role="clinician"
    )
    assert delete_off.status == 403


# -- practitioners ---------------------------------------------------------------------------------


async def test_create_read_and_update_a_practitioner(booking_api: BookingApi) -> None:
    created = await new_practitioner(booking_api)
    assert created["active"] is True and created["version"] == 1
    path = f"/api/v1/practitioners/{created['id']}"
    fetched = await booking_api.call("GET", path, role="clinician")
    assert fetched.body == created and fetched.headers["ETag"] == '"1"'

    updated = await booking_api.call(
        "PATCH",
        path,
        role="admin",
        json={"phone": "+447700900123", "email": None},
        headers={"If-Match": fetched.headers["ETag"]},
    )
    assert updated.status == 200
    assert updated.body["phone"] == "+447700900123" and updated.body["email"] is None
    assert updated.headers["ETag"] == '"2"'
    actions = await audit_actions(booking_api.pool, created["id"])
    assert [a["action"] for a in actions] == ["create", "update"]
    assert actions[1]["details"]["changes"] == {
        "phone": {"from": None, "to": "+447700900123"},
        "email": {"from": "nia@example.com", "to": None},
    }


async def test_practitioner_fields_are_validated_by_path(booking_api: BookingApi) -> None:
    reply = await booking_api.call(
        "POST",
        "/api/v1/practitioners",
        role="admin",
        json={"clinic_id": 0, "name": "", "email": "not an email", "phone": "07700 900123"},
    )
    assert reply.status == 422
    assert paths(reply) == {"clinic_id", "name", "email", "phone"}
    unknown_clinic = await booking_api.call(
        "POST", "/api/v1/practitioners", role="admin", json={"clinic_id": 999, "name": "Dr A"}
    )
    assert unknown_clinic.status == 404 and paths(unknown_clinic) == {"clinic_id"}
    active_null = await booking_api.call(
        "PATCH",
        f"/api/v1/practitioners/{HART}",
        role="admin",
        json={"active": None},
        headers={"If-Match": '"1"'},
    )
    assert active_null.status == 422 and paths(active_null) == {"active"}
    missing = await booking_api.call("GET", "/api/v1/practitioners/424242", role="admin")
    assert missing.status == 404


async def test_practitioners_list_in_pages_with_filters(booking_api: BookingApi) -> None:
    for n in range(3):
        await new_practitioner(booking_api, f"Dr Page {n}")
    other = await booking_api.call(
        "POST",
        "/api/v1/clinics",
        role="admin",
        json={"name": "Other", "time_zone": "America/New_York", "phone": "+12125550100"},
    )
    await booking_api.call(
        "POST",
        "/api/v1/practitioners",
        role="admin",
        json={"clinic_id": other.body["id"], "name": "Dr Elsewhere", "active": False},
    )

    names: list[str] = []
    params: dict[str, str] = {"limit": "2", "clinic_id": str(booking_api.clinic_id)}
    pages = 0
    while True:
        page = await booking_api.call("GET", "/api/v1/practitioners", role="admin", params=params)
        assert page.status == 200
        names += [p["name"] for p in page.body["items"]]
        pages += 1
        if page.body["next_cursor"] is None:
            break
        params["cursor"] = page.body["next_cursor"]
    assert pages == 3
    assert names == ["Dr Amelia Hart", "Dr Samir Patel", "Dr Page 0", "Dr Page 1", "Dr Page 2"]

    inactive = await booking_api.call(
        "GET", "/api/v1/practitioners", role="admin", params={"active": "false"}
    )
    assert [p["name"] for p in inactive.body["items"]] == ["Dr Elsewhere"]


async def test_removing_a_practitioner_keeps_history_and_protects_upcoming_sessions(
    booking_api: BookingApi,
) -> None:
    now = booking_api.clock.now()

    # Never booked: removed outright, schedule and all.
    fresh = await new_practitioner(booking_api)
    path = f"/api/v1/practitioners/{fresh['id']}"
    assert (await booking_api.call("DELETE", path, role="admin")).status == 204
    assert (await booking_api.call("GET", path, role="admin")).status == 404
    assert (await booking_api.call("DELETE", path, role="admin")).status == 404

    # Only past sessions: deactivated, so the history still names who treated the patient.
    past = await new_practitioner(booking_api, "Dr Past")
    await book(booking_api, past["id"], now - timedelta(days=7), status="completed")
    path = f"/api/v1/practitioners/{past['id']}"
    assert (await booking_api.call("DELETE", path, role="admin")).status == 204
    kept = await booking_api.call("GET", path, role="admin")
    assert kept.status == 200 and kept.body["active"] is False and kept.body["version"] == 2

    # Upcoming sessions: refused, both by DELETE and by deactivating through PATCH.
    await book(booking_api, HART, now + timedelta(days=2))
    path = f"/api/v1/practitioners/{HART}"
    refused = await booking_api.call("DELETE", path, role="admin")
    assert refused.status == 409 and refused.body["upcoming_appointments"] == 1
    deactivate = await booking_api.call(
        "PATCH", path, role="admin", json={"active": False}, headers={"If-Match": '"1"'}
    )
    assert deactivate.status == 409
    assert (await booking_api.call("GET", path, role="admin")).body["active"] is True

    assert [a["action"] for a in await audit_actions(booking_api.pool, fresh["id"])] == [
        "create",
        "delete",
    ]
    assert [a["action"] for a in await audit_actions(booking_api.pool, past["id"])] == [
        "create",
        "deactivate",
    ]


# -- weekly hours ----------------------------------------------------------------------------------


async def test_weekly_hours_refuse_overlaps_naming_the_range(booking_api: BookingApi) -> None:
    path = f"/api/v1/practitioners/{HART}/hours"
    overlap = await booking_api.call(
        "PUT", path, role="front_desk", json={"hours": WEEK}, headers={"If-Match": '"1"'}
    )
    assert overlap.status == 422
    assert paths(overlap) == {"hours.3.starts"}
    assert "hours.2" in overlap.body["errors"][0]["message"]

    backwards = await booking_api.call(
        "PUT",
        path,
        role="front_desk",
        json={"hours": [{"weekday": 8, "starts": "17:00", "ends": "09:00"}]},
        headers={"If-Match": '"1"'},
    )
    assert backwards.status == 422
    assert paths(backwards) == {"hours.0.weekday", "hours.0.ends"}
    unchanged = await booking_api.call("GET", path, role="admin")
    assert len(unchanged.body["hours"]) == 10 and unchanged.body["version"] == 1


async def test_two_front_desk_screens_editing_the_week_the_second_gets_412(
    booking_api: BookingApi,
) -> None:
    path = f"/api/v1/practitioners/{HART}/hours"
    screen_a = await booking_api.call("GET", path, role="front_desk")
    screen_b = await booking_api.call("GET", path, role="front_desk")
    assert screen_a.headers["ETag"] == '"1"'

    week = WEEK[:3]
    saved = await booking_api.call(
        "PUT",
        path,
        role="front_desk",
        json={"hours": week},
        headers={"If-Match": screen_a.headers["ETag"]},
    )
    assert saved.status == 200
    assert saved.body["hours"] == week and saved.headers["ETag"] == '"2"'

    lost = await booking_api.call(
        "PUT",
        path,
        role="front_desk",
        json={"hours": []},
        headers={"If-Match": screen_b.headers["ETag"]},
    )
    assert lost.status == 412 and lost.body["current_version"] == 2
    assert (await booking_api.call("PUT", path, role="admin", json={"hours": []})).status == 428
    assert (await booking_api.call("GET", path, role="clinician")).body["hours"] == week

    # The week shares the practitioner's version: a stale practitioner edit is refused too.
    stale = await booking_api.call(
        "PATCH",
        f"/api/v1/practitioners/{HART}",
        role="admin",
        json={"name": "Dr A. Hart"},
        headers={"If-Match": '"1"'},
    )
    assert stale.status == 412

    (entry,) = await audit_actions(booking_api.pool, HART)
    assert entry["action"] == "hours.replace"
    assert entry["actor_name"] == "test front_desk (front_desk)"
    assert len(entry["details"]["from"]) == 10 and entry["details"]["to"] == week


async def test_simultaneous_saves_of_the_week_one_wins_one_gets_412(
    booking_api: BookingApi,
) -> None:
    path = f"/api/v1/practitioners/{HART}/hours"
    replies = await asyncio.gather(
        *(
            booking_api.call(
                "PUT",
                path,
                role="front_desk",
                json={"hours": [{"weekday": day, "starts": "09:00", "ends": "17:00"}]},
                headers={"If-Match": '"1"'},
            )
            for day in (1, 2)
        )
    )
    assert sorted(r.status for r in replies) == [200, 412]
    winner = next(r for r in replies if r.status == 200)
    assert (await booking_api.call("GET", path, role="admin")).body["hours"] == winner.body["hours"]


# -- time off --------------------------------------------------------------------------------------


async def test_time_off_is_recorded_listed_and_removed(booking_api: BookingApi) -> None:
    base = f"/api/v1/practitioners/{HART}/time-off"
    created = await booking_api.call(
        "POST",
        base,
        role="front_desk",
        json={
            "starts_at": "2026-03-10T09:00:00+00:00",
            "ends_at": "2026-03-12T09:00:00+01:00",
            "reason": "conference",
        },
    )
    assert created.status == 201
    off = created.body
    assert off["starts_at"] == "2026-03-10T09:00:00Z"
    assert off["ends_at"] == "2026-03-12T08:00:00Z"  # stored and shown in UTC

    listed = await booking_api.call("GET", base, role="clinician")
    assert listed.body["items"] == [off]
    outside = await booking_api.call(
        "GET", base, role="clinician", params={"since": "2026-03-12T08:00:00Z"}
    )
    assert outside.body["items"] == []  # the end is exclusive

    other = await booking_api.call(
        "DELETE", f"/api/v1/practitioners/2/time-off/{off['id']}", role="front_desk"
    )
    assert other.status == 404  # not Dr Patel's
    assert (
        await booking_api.call("DELETE", f"{base}/{off['id']}", role="front_desk")
    ).status == 204
    assert (
        await booking_api.call("DELETE", f"{base}/{off['id']}", role="front_desk")
    ).status == 404
    assert (await booking_api.call("GET", base, role="admin")).body["items"] == []
    assert [a["action"] for a in await audit_actions(booking_api.pool, HART)] == [
        "time_off.create",
        "time_off.delete",
    ]


async def test_time_off_must_end_after_it_starts_and_carry_a_zone(
    booking_api: BookingApi,
) -> None:
    base = f"/api/v1/practitioners/{HART}/time-off"
    backwards = await booking_api.call(
        "POST",
        base,
        role="front_desk",
        json={"starts_at": "2026-03-10T09:00:00Z", "ends_at": "2026-03-10T09:00:00Z"},
    )
    assert backwards.status == 422 and paths(backwards) == {"ends_at"}
    naive = await booking_api.call(
        "POST",
        base,
        role="front_desk",
        json={"starts_at": "2026-03-10T09:00:00", "ends_at": "2026-03-10T17:00:00Z"},
    )
    assert naive.status == 422 and paths(naive) == {"starts_at"}
    nobody = await booking_api.call(
        "POST",
        "/api/v1/practitioners/9999/time-off",
        role="front_desk",
        json={"starts_at": "2026-03-10T09:00:00Z", "ends_at": "2026-03-10T10:00:00Z"},
    )
    assert nobody.status == 404
    window = await booking_api.call(
        "GET",
        base,
        role="front_desk",
        params={"since": "2026-03-10T09:00:00Z", "until": "2026-03-01T00:00:00Z"},
    )
    assert window.status == 422 and paths(window) == {"until"}


async def test_time_off_lists_in_pages_by_start(booking_api: BookingApi) -> None:
    base = f"/api/v1/practitioners/{HART}/time-off"
    day = datetime.fromisoformat("2026-04-01T09:00:00+00:00")
    # Created out of order, listed by start.
    for offset in (3, 0, 4, 1, 2):
        start = day + timedelta(days=offset)
        reply = await booking_api.call(
            "POST",
            base,
            role="admin",
            json={
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(hours=2)).isoformat(),
            },
        )
        assert reply.status == 201
    starts: list[str] = []
    params = {"limit": "2"}
    while True:
        page = await booking_api.call("GET", base, role="admin", params=params)
        starts += [item["starts_at"][:10] for item in page.body["items"]]
        if page.body["next_cursor"] is None:
            break
        params["cursor"] = page.body["next_cursor"]
    assert starts == ["2026-04-01", "2026-04-02", "2026-04-03", "2026-04-04", "2026-04-05"]


# -- day overrides ---------------------------------------------------------------------------------


async def test_day_overrides_are_set_replaced_listed_and_removed(booking_api: BookingApi) -> None:
    base = f"/api/v1/practitioners/{HART}/overrides"
    closed = await booking_api.call(
        "PUT", base, role="front_desk", json={"day": "2026-03-13", "reason": "training"}
    )
    assert closed.status == 200
    assert closed.body == {
        "practitioner_id": HART,
        "day": "2026-03-13",
        "ranges": [],
        "closed": True,
        "reason": "training",
    }
    late = await booking_api.call(
        "PUT",
        base,
        role="front_desk",
        json={
            "day": "2026-03-13",
            "ranges": [{"starts": "14:00", "ends": "20:00"}, {"starts": "09:00", "ends": "12:00"}],
        },
    )
    assert late.status == 200 and late.body["closed"] is False
    assert late.body["ranges"] == [
        {"starts": "09:00", "ends": "12:00"},
        {"starts": "14:00", "ends": "20:00"},
    ]
    await booking_api.call("PUT", base, role="admin", json={"day": "2026-03-20"})

    listed = await booking_api.call(
        "GET", base, role="clinician", params={"first_day": "2026-03-01", "last_day": "2026-03-15"}
    )
    assert [o["day"] for o in listed.body["items"]] == ["2026-03-13"]
    paged = await booking_api.call("GET", base, role="clinician", params={"limit": "1"})
    assert [o["day"] for o in paged.body["items"]] == ["2026-03-13"]
    rest = await booking_api.call(
        "GET", base, role="clinician", params={"limit": "1", "cursor": paged.body["next_cursor"]}
    )
    assert [o["day"] for o in rest.body["items"]] == ["2026-03-20"]
    assert rest.body["next_cursor"] is None

    gone = await booking_api.call("DELETE", base, role="front_desk", params={"day": "2026-03-13"})
    assert gone.status == 204
    again = await booking_api.call("DELETE", base, role="front_desk", params={"day": "2026-03-13"})
    assert again.status == 404
    no_day = await booking_api.call("DELETE", base, role="front_desk")
    assert no_day.status == 422 and paths(no_day) == {"day"}

    actions = await audit_actions(booking_api.pool, HART)
    assert [a["action"] for a in actions] == [
        "override.create",
        "override.replace",
        "override.create",
        "override.delete",
    ]
    assert actions[1]["details"]["from"]["closed"] is True


async def test_override_ranges_must_not_overlap(booking_api: BookingApi) -> None:
    base = f"/api/v1/practitioners/{HART}/overrides"
    reply = await booking_api.call(
        "PUT",
        base,
        role="front_desk",
        json={
            "day": "2026-03-13",
            "ranges": [{"starts": "09:00", "ends": "12:00"}, {"starts": "11:00", "ends": "13:00"}],
        },
    )
    assert reply.status == 422 and paths(reply) == {"ranges.1.starts"}
    bad_day = await booking_api.call(
        "PUT", base, role="front_desk", json={"day": "2026-02-30", "ranges": []}
    )
    assert bad_day.status == 422 and paths(bad_day) == {"day"}
    unknown = await booking_api.call(
        "PUT", base, role="front_desk", json={"day": "2026-03-13", "hours": []}
    )
    assert unknown.status == 422 and paths(unknown) == {"hours"}
    assert (await booking_api.call("GET", base, role="admin")).body["items"] == []


async def test_what_the_front_desk_sets_is_what_availability_reads(booking_api: BookingApi) -> None:
    await booking_api.call(
        "PUT",
        f"/api/v1/practitioners/{HART}/hours",
        role="front_desk",
        json={"hours": [{"weekday": 2, "starts": "10:00", "ends": "16:00"}]},
        headers={"If-Match": '"1"'},
    )
    await booking_api.call(
        "POST",
        f"/api/v1/practitioners/{HART}/time-off",
        role="front_desk",
        json={"starts_at": "2026-03-03T12:00:00Z", "ends_at": "2026-03-03T13:00:00Z"},
    )
    await booking_api.call(
        "PUT",
        f"/api/v1/practitioners/{HART}/overrides",
        role="front_desk",
        json={"day": "2026-03-10", "ranges": [{"starts": "08:00", "ends": "11:00"}]},
    )
    pool, ids = booking_api.pool, [HART]
    hours = await working_hours.for_practitioners(pool, ids)
    assert [(h.practitioner_id, h.weekday, h.starts, h.ends) for h in hours] == [
        (HART, 2, time(10), time(16))
    ]
    start = datetime(2026, 3, 1, tzinfo=UTC)
    absences = await time_off.overlapping(pool, ids, start, start + timedelta(days=7))
    assert [(t.practitioner_id, t.starts_at, t.ends_at) for t in absences] == [
        (HART, datetime(2026, 3, 3, 12, tzinfo=UTC), datetime(2026, 3, 3, 13, tzinfo=UTC))
    ]
    days = await schedule_overrides.for_practitioners(
        pool, ids, date(2026, 3, 9), date(2026, 3, 15)
    )
    assert [(o.practitioner_id, o.day, o.ranges) for o in days] == [
        (HART, date(2026, 3, 10), [(time(8), time(11))])
    ]
    # A deactivated practitioner is no longer offered.
    await booking_api.call(
        "PATCH",
        "/api/v1/practitioners/2",
        role="admin",
        json={"active": False},
        headers={"If-Match": '"1"'},
    )
    assert await practitioners.active_ids(pool, booking_api.clinic_id, None) == [HART]
