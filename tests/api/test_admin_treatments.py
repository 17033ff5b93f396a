"""Treatments and their series templates through the admin API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests import factories
from tests.conftest import BookingApi, Reply

PRP_GAPS = [{"position": p, "min_days": 14, "target_days": 28, "max_days": 42} for p in (2, 3, 4)]


def paths(reply: Reply) -> set[str]:
    return {error["path"] for error in reply.body["errors"]}


def course(api: BookingApi, **changes: Any) -> dict[str, Any]:
    body = {
        "clinic_id": api.clinic_id,
        "code": "prp-plus",
        "name": "PRP plus",
        "duration_minutes": 60,
        "buffer_after_minutes": 15,
        "needs_consultation": True,
        "sessions_min": 4,
        "sessions_max": 4,
        "gaps": PRP_GAPS,
        "maintenance_interval_days": 150,
    }
    return {**body, **changes}


async def create(api: BookingApi, **changes: Any) -> dict[str, Any]:
    reply = await api.call("POST", "/api/v1/treatments", role="admin", json=course(api, **changes))
    assert reply.status == 201, reply.body
    return dict(reply.body)


async def test_only_admin_changes_treatments_everyone_reads_them(booking_api: BookingApi) -> None:
    one = "/api/v1/treatments/1"
    for role in ("front_desk", "clinician"):
        listed = await booking_api.call("GET", "/api/v1/treatments", role=role)
        assert [t["code"] for t in listed.body["items"]] == [
            "consultation",
            "hair-mesotherapy",
            "prp-hair",
            "scalp-microneedling",
        ]
        assert (await booking_api.call("GET", one, role=role)).status == 200
        denied = [
            await booking_api.call(
                "POST", "/api/v1/treatments", role=role, json=course(booking_api)
            ),
            await booking_api.call(
                "PATCH", one, role=role, json={"name": "X"}, headers={"If-Match": '"1"'}
            ),
            await booking_api.call("DELETE", one, role=role),
        ]
        assert [r.status for r in denied] == [403, 403, 403]
    assert (await booking_api.call("GET", "/api/v1/treatments")).status == 401
    assert (await booking_api.call("GET", one, role="admin")).body["name"] == "Consultation"


async def test_the_demo_course_template_reads_back_per_position(booking_api: BookingApi) -> None:
    reply = await booking_api.call("GET", "/api/v1/treatments/2", role="clinician")
    assert reply.status == 200 and reply.headers["ETag"] == '"1"'
    meso = reply.body
    assert meso["code"] == "hair-mesotherapy" and meso["sessions_max"] == 8
    assert [(g["position"], g["target_days"]) for g in meso["gaps"]] == [
        (2, 7),
        (3, 7),
        (4, 7),
        (5, 14),
        (6, 14),
        (7, 14),
        (8, 14),
    ]
    assert meso["public"] is True and meso["active"] is True


async def test_admin_creates_a_course_and_it_is_audited(booking_api: BookingApi) -> None:
    created = await create(booking_api, gaps=list(reversed(PRP_GAPS)), public=False)
    assert [g["position"] for g in created["gaps"]] == [2, 3, 4]
    assert created["public"] is False and created["version"] == 1
    fetched = await booking_api.call("GET", f"/api/v1/treatments/{created['id']}", role="admin")
    assert fetched.body == created
    row = await booking_api.pool.fetchrow(
        "SELECT action, details FROM audit_log WHERE entity = 'treatment' AND entity_id = $1",
        created["id"],
    )
    assert row["action"] == "create" and row["details"]["treatment"]["code"] == "prp-plus"

    single = await create(booking_api, code="patch-test", sessions_min=1, sessions_max=1, gaps=[])
    assert single["gaps"] == [] and single["maintenance_interval_days"] == 150


async def test_gaps_are_validated_field_by_field(booking_api: BookingApi) -> None:
    async def post(**changes: Any) -> Reply:
        return await booking_api.call(
            "POST", "/api/v1/treatments", role="admin", json=course(booking_api, **changes)
        )

    inverted = await post(
        gaps=[
            {"position": 2, "min_days": 30, "target_days": 28, "max_days": 42},
            {"position": 3, "min_days": 14, "target_days": 28, "max_days": 21},
            PRP_GAPS[2],
        ]
    )
    assert inverted.status == 422
    assert paths(inverted) == {"gaps.0.target_days", "gaps.1.max_days"}

    missing = await post(gaps=[PRP_GAPS[0], PRP_GAPS[2]])
    assert missing.status == 422 and paths(missing) == {"gaps"}
    assert "missing 3" in missing.body["errors"][0]["message"]

    beyond = await post(gaps=[*PRP_GAPS, {**PRP_GAPS[0], "position": 5}])
    assert beyond.status == 422 and paths(beyond) == {"gaps.3.position"}

    twice = await post(gaps=[*PRP_GAPS, PRP_GAPS[1]])
    assert twice.status == 422 and paths(twice) == {"gaps.3.position"}

    sessions = await post(sessions_min=6, sessions_max=4)
    assert sessions.status == 422 and paths(sessions) == {"sessions_max"}

    fields = await post(code="PRP Plus", duration_minutes=2, buffer_before_minutes=-5, extra=1)
    assert fields.status == 422
    assert paths(fields) == {"code", "duration_minutes", "buffer_before_minutes", "extra"}

    first_gap = await post(gaps=[{**PRP_GAPS[0], "position": 1}, *PRP_GAPS[1:]])
    assert first_gap.status == 422 and paths(first_gap) == {"gaps.0.position"}


async def test_a_duplicate_code_is_a_409(booking_api: BookingApi) -> None:
    reply = await booking_api.call(
        "POST", "/api/v1/treatments", role="admin", json=course(booking_api, code="prp-hair")
    )
    assert reply.status == 409
    assert "code" in reply.body["detail"]
    created = await create(booking_api)
    rename = await booking_api.call(
        "PATCH",
        f"/api/v1/treatments/{created['id']}",
        role="admin",
        json={"code": "consultation"},
        headers={"If-Match": '"1"'},
    )
    assert rename.status == 409
    other = await booking_api.call(
        "POST",
        "/api/v1/clinics",
        role="admin",
        json={"name": "Other", "time_zone": "Europe/Paris", "phone": "+33100000000"},
    )
    # Codes are unique per clinic, not across clinics.
    await create(booking_api, clinic_id=other.body["id"], code="prp-hair")


async def test_an_unknown_clinic_is_a_404_naming_the_field(booking_api: BookingApi) -> None:
    reply = await booking_api.call(
        "POST", "/api/v1/treatments", role="admin", json=course(booking_api, clinic_id=999)
    )
    assert reply.status == 404 and paths(reply) == {"clinic_id"}


async def test_patch_keeps_sessions_and_gaps_consistent(booking_api: BookingApi) -> None:
    created = await create(booking_api)
    path = f"/api/v1/treatments/{created['id']}"

    longer = await booking_api.call(
        "PATCH", path, role="admin", json={"sessions_max": 6}, headers={"If-Match": '"1"'}
    )
    assert longer.status == 422 and paths(longer) == {"sessions_max"}
    assert "missing 5, 6" in longer.body["errors"][0]["message"]

    gaps = [*PRP_GAPS, *({**PRP_GAPS[0], "position": p, "max_days": 56} for p in (5, 6))]
    saved = await booking_api.call(
        "PATCH",
        path,
        role="admin",
        json={"sessions_max": 6, "gaps": gaps, "maintenance_interval_days": None},
        headers={"If-Match": '"1"'},
    )
    assert saved.status == 200
    assert saved.body["sessions_max"] == 6 and len(saved.body["gaps"]) == 5
    assert saved.body["maintenance_interval_days"] is None
    assert saved.headers["ETag"] == '"2"'

    row = await booking_api.pool.fetchrow(
        """
        SELECT details FROM audit_log WHERE entity = 'treatment' AND entity_id = $1
          AND action = 'update'
        """,
        created["id"],
    )
    assert set(row["details"]["changes"]) == {"sessions_max", "gaps", "maintenance_interval_days"}


async def test_two_admin_screens_racing_on_a_treatment(booking_api: BookingApi) -> None:
    path = "/api/v1/treatments/3"
    etag = (await booking_api.call("GET", path, role="admin")).headers["ETag"]
    first = await booking_api.call(
        "PATCH", path, role="admin", json={"duration_minutes": 45}, headers={"If-Match": etag}
    )
    assert first.status == 200
    second = await booking_api.call(
        "PATCH", path, role="admin", json={"duration_minutes": 90}, headers={"If-Match": etag}
    )
    assert second.status == 412 and second.body["current_version"] == 2
    no_etag = await booking_api.call("PATCH", path, role="admin", json={"public": False})
    assert no_etag.status == 428
    garbage = await booking_api.call(
        "PATCH", path, role="admin", json={"public": False}, headers={"If-Match": "*"}
    )
    assert garbage.status == 412
    assert (await booking_api.call("GET", path, role="admin")).body["duration_minutes"] == 45


async def test_removing_a_treatment_in_use_deactivates_it(booking_api: BookingApi) -> None:
    unused = await create(booking_api)
    path = f"/api/v1/treatments/{unused['id']}"
    assert (await booking_api.call("DELETE", path, role="admin")).status == 204
    assert (await booking_api.call("GET", path, role="admin")).status == 404
    assert (await booking_api.call("DELETE", path, role="admin")).status == 404

    # The consultation has a patient's appointment: it stays, inactive, for the history.
    now = booking_api.clock.now()
    patient_id = await factories.patient(
        booking_api.pool,
        clinic_id=booking_api.clinic_id,
        first_name="Test",
        last_name="Patient",
        now=now,
    )
    await factories.appointment(
        booking_api.pool,
        clinic_id=booking_api.clinic_id,
        practitioner_id=1,
        treatment_id=1,
        patient_id=patient_id,
        starts_at=now - timedelta(days=3),
        now=now - timedelta(days=3),
        status="completed",
    )
    assert (await booking_api.call("DELETE", "/api/v1/treatments/1", role="admin")).status == 204
    kept = await booking_api.call("GET", "/api/v1/treatments/1", role="admin")
    assert kept.status == 200 and kept.body["active"] is False
    inactive = await booking_api.call(
        "GET", "/api/v1/treatments", role="front_desk", params={"active": "false"}
    )
    assert [t["code"] for t in inactive.body["items"]] == ["consultation"]
    actions = await booking_api.pool.fetch(
        "SELECT entity_id, action FROM audit_log WHERE entity = 'treatment' ORDER BY id"
    )
    assert [(r["entity_id"], r["action"]) for r in actions] == [
        (unused["id"], "create"),
        (unused["id"], "delete"),
        (1, "deactivate"),
    ]


async def test_treatments_list_in_pages(booking_api: BookingApi) -> None:
    for n in range(3):
        await create(booking_api, code=f"extra-{n}")
    codes: list[str] = []
    params = {"limit": "3", "clinic_id": str(booking_api.clinic_id)}
    pages = 0
    while True:
        page = await booking_api.call("GET", "/api/v1/treatments", role="clinician", params=params)
        assert page.status == 200 and len(page.body["items"]) <= 3
        codes += [t["code"] for t in page.body["items"]]
        pages += 1
        if page.body["next_cursor"] is None:
            break
        params["cursor"] = page.body["next_cursor"]
    assert pages == 3
    assert codes[-3:] == ["extra-0", "extra-1", "extra-2"] and len(codes) == 7
