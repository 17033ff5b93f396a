"""Clinic setup through the admin API: who may do what, validation, If-Match, pagination, audit."""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.conftest import BookingApi, Reply

NEW_CLINIC = {
    "name": "Manchester Hair Clinic",
    "time_zone": "Europe/London",
    "phone": "+441610000000",
}


def paths(reply: Reply) -> set[str]:
    return {error["path"] for error in reply.body["errors"]}


async def audit_rows(pool: asyncpg.Pool, entity: str, entity_id: int) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT * FROM audit_log WHERE entity = $1 AND entity_id = $2 ORDER BY id",
        entity,
        entity_id,
    )
    return [dict(r) for r in rows]


async def test_every_role_reads_clinics_but_only_admin_changes_them(
    booking_api: BookingApi,
) -> None:
    clinic = f"/api/v1/clinics/{booking_api.clinic_id}"
    for role in ("admin", "front_desk", "clinician"):
        listed = await booking_api.call("GET", "/api/v1/clinics", role=role)
        assert listed.status == 200
        assert [c["name"] for c in listed.body["items"]] == ["Regimen Demo Hair Clinic"]
        assert (await booking_api.call("GET", clinic, role=role)).status == 200
    for role in ("front_desk", "clinician"):
        patch = await booking_api.call(
            "PATCH", clinic, role=role, json={"min_notice_minutes": 0}, headers={"If-Match": '"1"'}
        )
        assert patch.status == 403
        assert patch.headers["Content-Type"].startswith("application/problem+json")
        create = await booking_api.call("POST", "/api/v1/clinics", role=role, json=NEW_CLINIC)
        assert create.status == 403
    assert (await booking_api.call("GET", "/api/v1/clinics")).status == 401
    assert (await booking_api.call("PATCH", clinic, json={"name": "X"})).status == 401
    unchanged = await booking_api.call("GET", clinic, role="admin")
    assert unchanged.body["min_notice_minutes"] == 120 and unchanged.body["version"] == 1


async def test_a_clinic_reads_back_with_its_policies_and_an_etag(booking_api: BookingApi) -> None:
    reply = await booking_api.call("GET", f"/api/v1/clinics/{booking_api.clinic_id}", role="admin")
    assert reply.status == 200
    assert reply.headers["ETag"] == '"1"'
    assert reply.body["time_zone"] == "Europe/London"
    assert reply.body["quiet_start"] == "08:00" and reply.body["quiet_end"] == "20:00"
    assert reply.body["hold_minutes"] == 10
    assert reply.body["no_show_grace_minutes"] == 30
    assert reply.body["slot_step_minutes"] == 15


async def test_admin_creates_a_clinic_with_default_policies_and_it_is_audited(
    booking_api: BookingApi,
) -> None:
    created = await booking_api.call(
        "POST",
        "/api/v1/clinics",
        role="admin",
        json={**NEW_CLINIC, "quiet_end": "19:30"},
        headers={"X-Request-Id": "req-new-clinic"},
    )
    assert created.status == 201
    assert created.headers["ETag"] == '"1"'
    clinic = created.body
    assert clinic["min_notice_minutes"] == 120
    assert clinic["horizon_days"] == 180
    assert clinic["cancellation_notice_hours"] == 24
    assert clinic["quiet_start"] == "08:00" and clinic["quiet_end"] == "19:30"
    assert clinic["region"] == "GB"
    fetched = await booking_api.call("GET", f"/api/v1/clinics/{clinic['id']}", role="clinician")
    assert fetched.body == clinic

    (row,) = await audit_rows(booking_api.pool, "clinic", clinic["id"])
    assert row["action"] == "create"
    assert row["actor_kind"] == "staff" and row["actor_name"] == "test admin (admin)"
    assert row["request_id"] == "req-new-clinic"
    assert row["details"]["clinic"]["name"] == "Manchester Hair Clinic"
    assert row["at"] == booking_api.clock.now()


async def test_invalid_fields_are_422_naming_each_path(booking_api: BookingApi) -> None:
    reply = await booking_api.call(
        "POST",
        "/api/v1/clinics",
        role="admin",
        json={
            "name": "  ",
            "time_zone": "Mars/Olympus_Mons",
            "phone": "0161 000 0000",
            "brand_colour": "blue",
            "region": "gb",
            "hold_minutes": 0,
            "slot_step_minutes": 1,
            "colour": "#ffffff",
        },
    )
    assert reply.status == 422
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    assert paths(reply) == {
        "name",
        "time_zone",
        "phone",
        "brand_colour",
        "region",
        "hold_minutes",
        "slot_step_minutes",
        "colour",
    }

    backwards = await booking_api.call(
        "POST",
        "/api/v1/clinics",
        role="admin",
        json={**NEW_CLINIC, "quiet_start": "21:00", "quiet_end": "08:00"},
    )
    assert backwards.status == 422 and paths(backwards) == {"quiet_end"}
    not_a_time = await booking_api.call(
        "POST", "/api/v1/clinics", role="admin", json={**NEW_CLINIC, "quiet_start": "8am"}
    )
    assert not_a_time.status == 422 and paths(not_a_time) == {"quiet_start"}
    nul = await booking_api.call(
        "POST", "/api/v1/clinics", role="admin", json={**NEW_CLINIC, "address": "a\x00b"}
    )
    assert nul.status == 422 and paths(nul) == {"address"}


async def test_patch_is_checked_against_the_settings_it_keeps(booking_api: BookingApi) -> None:
    clinic = f"/api/v1/clinics/{booking_api.clinic_id}"
    # quiet_start stays 08:00, so an end at 07:00 is refused although the body alone is fine.
    reply = await booking_api.call(
        "PATCH", clinic, role="admin", json={"quiet_end": "07:00"}, headers={"If-Match": '"1"'}
    )
    assert reply.status == 422 and paths(reply) == {"quiet_end"}
    null_name = await booking_api.call(
        "PATCH", clinic, role="admin", json={"name": None}, headers={"If-Match": '"1"'}
    )
    assert null_name.status == 422 and paths(null_name) == {"name"}
    assert (await booking_api.call("GET", clinic, role="admin")).body["version"] == 1


async def test_two_admin_screens_racing_the_second_gets_412(booking_api: BookingApi) -> None:
    clinic = f"/api/v1/clinics/{booking_api.clinic_id}"
    screen_a = await booking_api.call("GET", clinic, role="admin")
    screen_b = await booking_api.call("GET", clinic, role="admin")
    assert screen_a.headers["ETag"] == screen_b.headers["ETag"] == '"1"'

    first = await booking_api.call(
        "PATCH",
        clinic,
        role="admin",
        json={"min_notice_minutes": 60, "slot_step_minutes": 30},
        headers={"If-Match": screen_a.headers["ETag"]},
    )
    assert first.status == 200
    assert first.body["min_notice_minutes"] == 60 and first.body["version"] == 2
    assert first.headers["ETag"] == '"2"'

    second = await booking_api.call(
        "PATCH",
        clinic,
        role="admin",
        json={"min_notice_minutes": 240},
        headers={"If-Match": screen_b.headers["ETag"]},
    )
    assert second.status == 412
    assert second.body["current_version"] == 2
    without = await booking_api.call("PATCH", clinic, role="admin", json={"hold_minutes": 5})
    assert without.status == 428
    for forged in ("2", '"two"', '"' + "9" * 30 + '"'):  # not an ETag we issued
        odd = await booking_api.call(
            "PATCH", clinic, role="admin", json={"hold_minutes": 5}, headers={"If-Match": forged}
        )
        assert odd.status == 412, (forged, odd.body)

    now = await booking_api.call("GET", clinic, role="admin")
    assert now.body["min_notice_minutes"] == 60 and now.body["hold_minutes"] == 10

    rows = await audit_rows(booking_api.pool, "clinic", booking_api.clinic_id)
    assert [r["action"] for r in rows] == ["update"]
    assert rows[0]["details"]["changes"] == {
        "min_notice_minutes": {"from": 120, "to": 60},
        "slot_step_minutes": {"from": 15, "to": 30},
    }


async def test_unknown_clinics_are_404_problems(booking_api: BookingApi) -> None:
    for path in (
        "/api/v1/clinics/999999",
        "/api/v1/clinics/abc",
        "/api/v1/clinics/0",
        "/api/v1/clinics/%C2%B2",  # "²": a digit to str.isdigit(), not to int()
        "/api/v1/clinics/" + "9" * 30,
    ):
        reply = await booking_api.call("GET", path, role="admin")
        assert reply.status == 404
        assert reply.body["status"] == 404
    patch = await booking_api.call(
        "PATCH", "/api/v1/clinics/999999", role="admin", json={}, headers={"If-Match": '"1"'}
    )
    assert patch.status == 404


async def test_a_cursor_past_bigint_is_a_422_naming_it(booking_api: BookingApi) -> None:
    for path in ("/api/v1/patients", "/api/v1/series"):
        reply = await booking_api.call(
            "GET", path, role="admin", params={"cursor": "aWQ6OTk5OTk5OTk5OTk5OTk5OTk5OTk5"}
        )
        assert reply.status == 422, (path, reply.body)
        assert [e["path"] for e in reply.body["errors"]] == ["cursor"]


async def test_clinics_list_in_pages(booking_api: BookingApi) -> None:
    for n in range(4):
        reply = await booking_api.call(
            "POST", "/api/v1/clinics", role="admin", json={**NEW_CLINIC, "name": f"Branch {n}"}
        )
        assert reply.status == 201
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await booking_api.call("GET", "/api/v1/clinics", role="front_desk", params=params)
        assert page.status == 200
        seen += [c["name"] for c in page.body["items"]]
        pages += 1
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == ["Regimen Demo Hair Clinic", "Branch 0", "Branch 1", "Branch 2", "Branch 3"]

    bad = await booking_api.call("GET", "/api/v1/clinics", role="admin", params={"cursor": "nope"})
    assert bad.status == 422 and paths(bad) == {"cursor"}
    too_many = await booking_api.call("GET", "/api/v1/clinics", role="admin", params={"limit": 201})
    assert too_many.status == 422 and paths(too_many) == {"limit"}


async def test_openapi_declares_every_setup_endpoint_precisely(booking_api: BookingApi) -> None:
    document = (await booking_api.call("GET", "/api/openapi.json")).body
    operations = {
        (method.upper(), path): op
        for path, methods in document["paths"].items()
        for method, op in methods.items()
    }
    expected = {
        ("GET", "/api/v1/clinics"),
        ("POST", "/api/v1/clinics"),
        ("GET", "/api/v1/clinics/{clinic_id}"),
        ("PATCH", "/api/v1/clinics/{clinic_id}"),
        ("GET", "/api/v1/practitioners"),
        ("POST", "/api/v1/practitioners"),
        ("GET", "/api/v1/practitioners/{practitioner_id}"),
        ("PATCH", "/api/v1/practitioners/{practitioner_id}"),
        ("DELETE", "/api/v1/practitioners/{practitioner_id}"),
        ("GET", "/api/v1/practitioners/{practitioner_id}/hours"),
        ("PUT", "/api/v1/practitioners/{practitioner_id}/hours"),
        ("GET", "/api/v1/practitioners/{practitioner_id}/time-off"),
        ("POST", "/api/v1/practitioners/{practitioner_id}/time-off"),
        ("DELETE", "/api/v1/practitioners/{practitioner_id}/time-off/{time_off_id}"),
        ("GET", "/api/v1/practitioners/{practitioner_id}/overrides"),
        ("PUT", "/api/v1/practitioners/{practitioner_id}/overrides"),
        ("DELETE", "/api/v1/practitioners/{practitioner_id}/overrides"),
        ("GET", "/api/v1/treatments"),
        ("POST", "/api/v1/treatments"),
        ("GET", "/api/v1/treatments/{treatment_id}"),
        ("PATCH", "/api/v1/treatments/{treatment_id}"),
        ("DELETE", "/api/v1/treatments/{treatment_id}"),
        ("GET", "/api/v1/audit"),
    }
    assert expected <= set(operations)
    for key in expected:
        responses = operations[key]["responses"]
        if key[0] == "DELETE":
            assert "204" in responses, key
        if key[0] in ("PATCH", "PUT") and key[1].endswith(("_id}", "/hours")):
            assert {"412", "428"} <= set(responses), key
    schemas = document["components"]["schemas"]
    assert schemas["ClinicCreate"]["additionalProperties"] is False
    # A PATCH field may be left out but is never null unless its type allows it.
    assert "default" not in schemas["ClinicPatch"]["properties"]["name"]
    assert schemas["ClinicPatch"]["properties"]["name"]["type"] == "string"
