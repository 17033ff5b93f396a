"""Searching the audit log: admin only, filters, and pages that neither skip nor repeat."""

from __future__ import annotations

from datetime import timedelta

from shared.store import audit
from shared.store.audit import Actor
from tests.conftest import BookingApi, Reply


def paths(reply: Reply) -> set[str]:
    return {error["path"] for error in reply.body["errors"]}


async def rename_clinic(api: BookingApi, name: str, request_id: str | None = None) -> None:
    path = f"/api/v1/clinics/{api.clinic_id}"
    etag = (await api.call("GET", path, role="admin")).headers["ETag"]
    headers = {"If-Match": etag, **({"X-Request-Id": request_id} if request_id else {})}
    reply = await api.call("PATCH", path, role="admin", json={"name": name}, headers=headers)
    assert reply.status == 200


async def test_only_admin_reads_the_audit_log(booking_api: BookingApi) -> None:
    assert (await booking_api.call("GET", "/api/v1/audit", role="admin")).status == 200
    for role in ("front_desk", "clinician"):
        reply = await booking_api.call("GET", "/api/v1/audit", role=role)
        assert reply.status == 403
        assert reply.body["detail"] == f"the {role} role may not do this"
    assert (await booking_api.call("GET", "/api/v1/audit")).status == 401


async def test_a_write_shows_who_what_when_and_which_request(booking_api: BookingApi) -> None:
    await rename_clinic(booking_api, "Regimen Soho", request_id="desk-42")
    reply = await booking_api.call("GET", "/api/v1/audit", role="admin")
    (entry,) = reply.body["items"]
    assert entry["action"] == "update" and entry["entity"] == "clinic"
    assert entry["entity_id"] == booking_api.clinic_id
    assert entry["actor_kind"] == "staff" and entry["actor_name"] == "test admin (admin)"
    assert entry["request_id"] == "desk-42"
    assert entry["at"] == "2026-03-02T09:00:00Z"
    assert entry["details"]["changes"]["name"] == {
        "from": "Regimen Demo Hair Clinic",
        "to": "Regimen Soho",
    }


async def test_filters_combine(booking_api: BookingApi) -> None:
    clock = booking_api.clock
    await rename_clinic(booking_api, "First")
    clock.advance(timedelta(hours=1))
    await booking_api.call(
        "PUT",
        "/api/v1/practitioners/1/overrides",
        role="front_desk",
        json={"day": "2026-03-13"},
    )
    clock.advance(timedelta(hours=1))
    await rename_clinic(booking_api, "Second")
    await audit.insert(
        booking_api.pool,
        at=clock.now(),
        actor=Actor("staff", 1, "someone"),
        action="read",
        entity="patient",
        entity_id=77,
        patient_id=77,
    )

    async def search(**params: str) -> list[tuple[str, str]]:
        reply = await booking_api.call("GET", "/api/v1/audit", role="admin", params=params)
        assert reply.status == 200, reply.body
        return [(e["entity"], e["action"]) for e in reply.body["items"]]

    assert await search(entity="clinic") == [("clinic", "update"), ("clinic", "update")]
    assert await search(entity="practitioner", entity_id="1") == [
        ("practitioner", "override.create")
    ]
    assert await search(action="override.create") == [("practitioner", "override.create")]
    assert await search(patient_id="77") == [("patient", "read")]
    assert await search(since="2026-03-02T09:30:00Z", until="2026-03-02T11:00:00Z") == [
        ("practitioner", "override.create")
    ]
    assert await search(since="2026-03-02T12:00:00+02:00") == [
        ("patient", "read"),
        ("clinic", "update"),
        ("practitioner", "override.create"),
    ]
    assert await search(entity="clinic", action="delete") == []


async def test_pages_neither_skip_nor_repeat_while_new_entries_arrive(
    booking_api: BookingApi,
) -> None:
    for n in range(7):
        await rename_clinic(booking_api, f"Name {n}")
    first = await booking_api.call("GET", "/api/v1/audit", role="admin", params={"limit": "3"})
    seen = [e["details"]["changes"]["name"]["to"] for e in first.body["items"]]
    assert seen == ["Name 6", "Name 5", "Name 4"]

    # A write between pages lands before the first page, not in the middle of the next one.
    await rename_clinic(booking_api, "Written meanwhile")
    cursor = first.body["next_cursor"]
    pages = 1
    while cursor is not None:
        page = await booking_api.call(
            "GET", "/api/v1/audit", role="admin", params={"limit": "3", "cursor": cursor}
        )
        seen += [e["details"]["changes"]["name"]["to"] for e in page.body["items"]]
        cursor = page.body["next_cursor"]
        pages += 1
    assert pages == 3
    assert seen == [f"Name {n}" for n in range(6, -1, -1)]


async def test_bad_search_parameters_are_422_naming_them(booking_api: BookingApi) -> None:
    cases = [
        ({"cursor": "bm90LWEtY3Vyc29y"}, {"cursor"}),
        ({"limit": "0"}, {"limit"}),
        ({"limit": "201"}, {"limit"}),
        ({"since": "yesterday"}, {"since"}),
        ({"since": "2026-03-02T09:00:00"}, {"since"}),  # no zone: ambiguous
        ({"since": "2026-03-02T10:00:00Z", "until": "2026-03-02T09:00:00Z"}, {"until"}),
        ({"patient_id": "-1", "entity": "clinic; drop"}, {"patient_id", "entity"}),
    ]
    for params, expected in cases:
        reply = await booking_api.call("GET", "/api/v1/audit", role="admin", params=params)
        assert reply.status == 422, params
        assert paths(reply) == expected, params
