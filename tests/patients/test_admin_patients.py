"""The patients part of the admin API: records, search, concurrent edits, roles, consents,
erasure, and what bad input gets."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests import factories
from tests.conftest import BookingApi, Reply

BASE = "/api/v1/patients"
ADA = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "mobile": "07911 123456",
    "email": "Ada.Lovelace@Example.COM",
    "date_of_birth": "1985-12-10",
}


async def create(api: BookingApi, **fields: Any) -> dict[str, Any]:
    reply = await api.call("POST", BASE, role="front_desk", json={**ADA, **fields})
    assert reply.status == 201, reply.body
    return reply.body


async def audit_rows(api: BookingApi, action: str) -> list[dict[str, Any]]:
    rows = await api.pool.fetch("SELECT * FROM audit_log WHERE action = $1 ORDER BY id", action)
    return [dict(r) for r in rows]


def error_paths(reply: Reply) -> list[str]:
    assert reply.status == 422, reply.body
    return [e["path"] for e in reply.body["errors"]]


async def patch(
    api: BookingApi, patient_id: int, body: dict[str, Any], *, role: str, version: int | None
) -> Reply:
    headers = {"If-Match": f'"{version}"'} if version is not None else {}
    return await api.call("PATCH", f"{BASE}/{patient_id}", role=role, json=body, headers=headers)


# -- create and read -------------------------------------------------------------------------------


async def test_create_normalises_contact_and_every_read_is_audited(booking_api: BookingApi) -> None:
    created = await create(booking_api)
    assert created["mobile"] == "+447911123456"
    assert created["email"] == "Ada.Lovelace@example.com"
    assert created["clinic_id"] == booking_api.clinic_id
    assert created["version"] == 1 and created["consents"] == [] and created["erased_at"] is None

    reply = await booking_api.call("GET", f"{BASE}/{created['id']}", role="clinician")
    assert reply.status == 200
    assert reply.headers["ETag"] == '"1"'
    assert reply.body["first_name"] == "Ada" and reply.body["allergies"] == ""

    (created_row,) = await audit_rows(booking_api, "patient.create")
    assert created_row["patient_id"] == created["id"]
    (read,) = await audit_rows(booking_api, "patient.read")
    clinician = await booking_api.pool.fetchval(
        "SELECT id FROM staff_token WHERE role = 'clinician'"
    )
    assert (read["patient_id"], read["entity"], read["entity_id"]) == (
        created["id"],
        "patient",
        created["id"],
    )
    assert (read["actor_kind"], read["actor_id"]) == ("staff", clinician)
    assert read["details"] == {"view": "record"} and read["request_id"]


async def test_unknown_patient_is_404_and_not_audited(booking_api: BookingApi) -> None:
    for path in (f"{BASE}/999", f"{BASE}/999/consents", f"{BASE}/abc"):
        assert (await booking_api.call("GET", path, role="admin")).status == 404
    assert await audit_rows(booking_api, "patient.read") == []


# -- search ----------------------------------------------------------------------------------------


async def test_search_by_name_with_typo_mobile_and_email(booking_api: BookingApi) -> None:
    ada = await create(booking_api)
    alexandra = await create(
        booking_api,
        first_name="Alexandra",
        last_name="Papadopoulos",
        mobile="+447911123457",
        email="alex@example.org",
    )
    await create(
        booking_api, first_name="Grace", last_name="Hopper", mobile=None, email="grace@example.net"
    )

    async def ids(**params: str) -> list[int]:
        reply = await booking_api.call("GET", BASE, role="front_desk", params=params)
        assert reply.status == 200, reply.body
        return [item["id"] for item in reply.body["items"]]

    assert await ids(name="Lovelase") == [ada["id"]]  # typo
    assert await ids(name="lovel") == [ada["id"]]  # partial
    assert await ids(name="papadopolous") == [alexandra["id"]]  # one word of a longer name
    assert await ids(mobile="07911 123456") == [ada["id"]]  # national format
    assert await ids(mobile="+44 7911 123457") == [alexandra["id"]]
    assert await ids(email="ADA.LOVELACE@EXAMPLE.COM") == [ada["id"]]
    assert await ids(name="Ada", email="alex@example.org") == []  # every filter must match
    assert await ids(name="") == await ids()  # a blank box filters nothing

    reply = await booking_api.call("GET", BASE, role="clinician", params={"name": "Lovelace"})
    (item,) = reply.body["items"]
    assert set(item) == {
        "id",
        "clinic_id",
        "first_name",
        "last_name",
        "mobile",
        "email",
        "date_of_birth",
        "version",
    }  # compact: no clinical fields
    searches = await audit_rows(booking_api, "patient.search")
    assert searches[-1]["details"] == {"filters": ["name"], "ids": [ada["id"]]}
    assert searches[-1]["patient_id"] is None


async def test_search_pages_through_every_match_once(booking_api: BookingApi) -> None:
    made = [
        (await create(booking_api, first_name=f"Pat{n}", mobile=f"+4479111234{n:02d}"))["id"]
        for n in range(5)
    ]
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"name": "Lovelace", "limit": "2", **({"cursor": cursor} if cursor else {})}
        reply = await booking_api.call("GET", BASE, role="admin", params=params)
        assert reply.status == 200
        pages += 1
        seen += [item["id"] for item in reply.body["items"]]
        cursor = reply.body["next_cursor"]
        if cursor is None:
            break
    assert seen == made and pages == 3

    bad = await booking_api.call("GET", BASE, role="admin", params={"cursor": "nonsense"})
    assert error_paths(bad) == ["cursor"]


# -- concurrent edits ------------------------------------------------------------------------------


async def test_two_front_desk_screens_cannot_overwrite_each_other(booking_api: BookingApi) -> None:
    patient = await create(booking_api)
    screens = [
        await booking_api.call("GET", f"{BASE}/{patient['id']}", role="front_desk")
        for _ in range(2)
    ]
    assert {screen.headers["ETag"] for screen in screens} == {'"1"'}

    first = await booking_api.call(
        "PATCH",
        f"{BASE}/{patient['id']}",
        role="front_desk",
        json={"mobile": "07911 123458", "last_name": "King"},
        headers={"If-Match": screens[0].headers["ETag"]},
    )
    assert first.status == 200, first.body
    assert first.headers["ETag"] == '"2"' and first.body["mobile"] == "+447911123458"

    second = await booking_api.call(
        "PATCH",
        f"{BASE}/{patient['id']}",
        role="front_desk",
        json={"email": "ada@example.com"},
        headers={"If-Match": screens[1].headers["ETag"]},
    )
    assert second.status == 412
    current = await booking_api.call("GET", f"{BASE}/{patient['id']}", role="front_desk")
    assert current.body["email"] == "Ada.Lovelace@example.com"  # the loser changed nothing

    (update,) = await audit_rows(booking_api, "patient.update")
    assert update["details"] == {"fields": ["last_name", "mobile"]}  # names, never values


async def test_concurrent_patches_with_the_same_version_one_wins(booking_api: BookingApi) -> None:
    patient = await create(booking_api)
    replies = await asyncio.gather(
        *(
            patch(booking_api, patient["id"], {"first_name": name}, role="front_desk", version=1)
            for name in ("Augusta", "Ada")
        )
    )
    assert sorted(r.status for r in replies) == [200, 412]


async def test_patch_needs_if_match(booking_api: BookingApi) -> None:
    patient = await create(booking_api)
    reply = await patch(booking_api, patient["id"], {"first_name": "A"}, role="admin", version=None)
    assert reply.status == 428
    garbage = await booking_api.call(
        "PATCH",
        f"{BASE}/{patient['id']}",
        role="admin",
        json={"first_name": "A"},
        headers={"If-Match": "yesterday"},
    )
    assert garbage.status == 412
    assert await audit_rows(booking_api, "patient.update") == []


async def test_clinician_edits_clinical_fields(booking_api: BookingApi) -> None:
    patient = await create(booking_api)
    screening = {"blood_thinners_or_nsaids": True, "details": "aspirin 75 mg daily"}
    reply = await patch(
        booking_api,
        patient["id"],
        {"allergies": "lidocaine", "screening": screening, "notes": "line one\nline two"},
        role="clinician",
        version=1,
    )
    assert reply.status == 200, reply.body
    assert reply.body["screening"] == screening and reply.body["allergies"] == "lidocaine"
    assert reply.body["version"] == 2


# -- roles -----------------------------------------------------------------------------------------


async def test_each_role_is_refused_what_its_job_does_not_need(booking_api: BookingApi) -> None:
    patient = await create(booking_api)
    pid = patient["id"]

    refused = await patch(booking_api, pid, {"mobile": "07911 123458"}, role="clinician", version=1)
    assert refused.status == 403
    assert [e["path"] for e in refused.body["errors"]] == ["mobile"]
    mixed = await patch(
        booking_api, pid, {"allergies": "none", "email": None}, role="clinician", version=1
    )
    assert mixed.status == 403
    for role in ("front_desk", "admin"):
        clinical = await patch(booking_api, pid, {"allergies": "x"}, role=role, version=1)
        assert clinical.status == 403

    erase = {"reason": "request 42"}
    for role in ("front_desk", "clinician"):
        reply = await booking_api.call("POST", f"{BASE}/{pid}/erase", role=role, json=erase)
        assert reply.status == 403
    created = await booking_api.call("POST", BASE, role="clinician", json=ADA)
    assert created.status == 403
    consent = {"kind": "care_sms", "granted": True, "wording_version": "v1"}
    reply = await booking_api.call("POST", f"{BASE}/{pid}/consents", role="clinician", json=consent)
    assert reply.status == 403

    for method, path in (
        ("GET", BASE),
        ("POST", BASE),
        ("GET", f"{BASE}/{pid}"),
        ("PATCH", f"{BASE}/{pid}"),
        ("GET", f"{BASE}/{pid}/consents"),
        ("POST", f"{BASE}/{pid}/consents"),
        ("POST", f"{BASE}/{pid}/erase"),
    ):
        assert (await booking_api.call(method, path, json={})).status == 401, (method, path)

    still = await booking_api.call("GET", f"{BASE}/{pid}", role="admin")
    assert still.body["version"] == 1 and still.body["erased_at"] is None


# -- consents --------------------------------------------------------------------------------------


async def test_consent_history_is_append_only_and_newest_wins(booking_api: BookingApi) -> None:
    patient = await create(booking_api)
    path = f"{BASE}/{patient['id']}/consents"
    for granted, wording in ((True, "sms-2026-01"), (False, "sms-2026-02")):
        reply = await booking_api.call(
            "POST",
            path,
            role="front_desk",
            json={"kind": "care_sms", "granted": granted, "wording_version": wording},
        )
        assert reply.status == 201, reply.body
        assert reply.body["source"] == "staff"
        booking_api.clock.advance(timedelta(minutes=1))
    await booking_api.call(
        "POST",
        path,
        role="admin",
        json={"kind": "care_email", "granted": True, "wording_version": "email-1"},
    )

    history = await booking_api.call("GET", path, role="clinician")
    assert history.status == 200
    assert [(c["kind"], c["granted"]) for c in history.body["items"]] == [
        ("care_sms", True),
        ("care_sms", False),
        ("care_email", True),
    ]
    record = await booking_api.call("GET", f"{BASE}/{patient['id']}", role="front_desk")
    current = {c["kind"]: (c["granted"], c["wording_version"]) for c in record.body["consents"]}
    assert current == {"care_sms": (False, "sms-2026-02"), "care_email": (True, "email-1")}

    assert len(await audit_rows(booking_api, "patient.consent")) == 3
    reads = [r["details"]["view"] for r in await audit_rows(booking_api, "patient.read")]
    assert reads == ["consents", "record"]

    bad = await booking_api.call(
        "POST", path, role="admin", json={"kind": "telepathy", "granted": "yes"}
    )
    assert set(error_paths(bad)) == {"kind", "granted", "wording_version"}


# -- erasure ---------------------------------------------------------------------------------------


async def test_erasure_removes_contact_data_and_keeps_the_medical_record(
    booking_api: BookingApi,
) -> None:
    patient = await create(booking_api)
    pid = patient["id"]
    await patch(booking_api, pid, {"allergies": "lidocaine"}, role="clinician", version=1)
    for kind in ("care_sms", "marketing_email"):
        await booking_api.call(
            "POST",
            f"{BASE}/{pid}/consents",
            role="front_desk",
            json={"kind": kind, "granted": True, "wording_version": "v1"},
        )
    appointment_id = await book_an_appointment(booking_api, pid)
    booking_api.clock.advance(timedelta(minutes=5))

    reply = await booking_api.call(
        "POST", f"{BASE}/{pid}/erase", role="admin", json={"reason": "erasure request #17"}
    )
    assert reply.status == 200, reply.body
    erased = reply.body
    assert (erased["first_name"], erased["last_name"]) == ("Erased", "Erased")
    assert erased["mobile"] is None and erased["email"] is None and erased["erased_at"]
    assert erased["allergies"] == "lidocaine" and erased["date_of_birth"] == "1985-12-10"
    assert erased["version"] == 3
    current = {c["kind"]: c["granted"] for c in erased["consents"]}
    assert current == {"care_sms": True, "marketing_email": False, "marketing_sms": False}

    kept = await booking_api.pool.fetchval(
        "SELECT patient_id FROM appointment WHERE id = $1", appointment_id
    )
    assert kept == pid
    history = await booking_api.call("GET", f"{BASE}/{pid}/consents", role="admin")
    assert len(history.body["items"]) == 4  # the two grants and the two withdrawals

    (decision,) = await audit_rows(booking_api, "patient.erase")
    assert decision["reason"] == "erasure request #17" and decision["patient_id"] == pid

    again = await booking_api.call(
        "POST", f"{BASE}/{pid}/erase", role="admin", json={"reason": "again"}
    )
    assert again.status == 409 and again.body["erased_at"]
    found = await booking_api.call("GET", BASE, role="admin", params={"mobile": "07911123456"})
    assert found.body["items"] == []
    contact = await patch(booking_api, pid, {"mobile": "07911123456"}, role="admin", version=3)
    assert contact.status == 409
    clinical = await patch(booking_api, pid, {"notes": "seen"}, role="clinician", version=3)
    assert clinical.status == 200
    grant = await booking_api.call(
        "POST",
        f"{BASE}/{pid}/consents",
        role="admin",
        json={"kind": "marketing_sms", "granted": True, "wording_version": "v2"},
    )
    assert grant.status == 409


async def book_an_appointment(api: BookingApi, patient_id: int) -> int:
    treatment = await api.pool.fetchval("SELECT id FROM treatment WHERE code = 'consultation'")
    practitioner = await api.pool.fetchval("SELECT min(id) FROM practitioner")
    starts = datetime(2026, 3, 3, 10, tzinfo=UTC)
    return await factories.appointment(
        api.pool,
        clinic_id=api.clinic_id,
        practitioner_id=practitioner,
        treatment_id=treatment,
        patient_id=patient_id,
        starts_at=starts,
        now=api.clock.now(),
    )


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "path", "says"),
    [
        ({"mobile": "12345"}, "mobile", ""),
        ({"mobile": "+44 20 7946 0000"}, "mobile", "landline"),
        ({"email": "not-an-email"}, "email", ""),
        ({"date_of_birth": "2026-03-03"}, "date_of_birth", "future"),
        ({"date_of_birth": "1850-01-01"}, "date_of_birth", "year"),
        ({"date_of_birth": "10/12/1985"}, "date_of_birth", ""),
        ({"date_of_birth": 0}, "date_of_birth", "YYYY-MM-DD"),
        ({"clinic_id": "1"}, "clinic_id", ""),
        ({"first_name": "   "}, "first_name", ""),
        ({"last_name": "x" * 101}, "last_name", ""),
        ({"first_name": "A\u0000da"}, "first_name", ""),
        ({"language": "English"}, "language", ""),
        ({"clinic_id": 999}, "clinic_id", "clinic"),
        ({"allergies": "none"}, "allergies", ""),  # not a field of creation
    ],
)
async def test_bad_creation_is_422_naming_the_field(
    booking_api: BookingApi, fields: dict[str, Any], path: str, says: str
) -> None:
    reply = await booking_api.call("POST", BASE, role="front_desk", json={**ADA, **fields})
    assert error_paths(reply) == [path]
    assert says in reply.body["errors"][0]["message"]
    assert await audit_rows(booking_api, "patient.create") == []


async def test_bad_patches_and_searches_are_422(booking_api: BookingApi) -> None:
    pid = (await create(booking_api))["id"]
    for body, path in (
        ({"first_name": None}, "first_name"),
        ({"mobile": "0"}, "mobile"),
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        (
            {"screening": {"pregnant_or_breastfeeding": "maybe"}},
            "screening.pregnant_or_breastfeeding",
        ),
        ({"id": 5}, "id"),
        ({}, "(root)"),
    ):
        role = "clinician" if "screening" in body else "front_desk"
        reply = await patch(booking_api, pid, body, role=role, version=1)
        assert error_paths(reply) == [path], body
    for params, path in (
        ({"mobile": "not a phone"}, "mobile"),
        ({"email": "@"}, "email"),
        ({"limit": "0"}, "limit"),
        ({"name": "100%"}, "name"),
        ({"clinic_id": "999"}, "clinic_id"),
    ):
        reply = await booking_api.call("GET", BASE, role="admin", params=params)
        assert error_paths(reply) == [path], params

    cleared = await patch(booking_api, pid, {"email": None, "mobile": ""}, role="admin", version=1)
    assert (
        cleared.status == 200 and cleared.body["email"] is None and cleared.body["mobile"] is None
    )


async def test_consent_and_erasure_retries_with_a_key_happen_once(booking_api: BookingApi) -> None:
    pid = (await create(booking_api))["id"]
    consent = {"kind": "marketing_sms", "granted": True, "wording_version": "m1"}
    replies = [
        await booking_api.call(
            "POST",
            f"{BASE}/{pid}/consents",
            role="front_desk",
            json=consent,
            headers={"Idempotency-Key": "consent-1"},
        )
        for _ in range(2)
    ]
    assert [r.status for r in replies] == [201, 201] and replies[0].body == replies[1].body
    assert replies[1].headers["Idempotent-Replayed"] == "true"
    assert len(await audit_rows(booking_api, "patient.consent")) == 1

    erase = {"reason": "request 9"}
    first, retry = [
        await booking_api.call(
            "POST",
            f"{BASE}/{pid}/erase",
            role="admin",
            json=erase,
            headers={"Idempotency-Key": "erase-1"},
        )
        for _ in range(2)
    ]
    assert (first.status, retry.status) == (200, 200) and first.body == retry.body
    assert len(await audit_rows(booking_api, "patient.erase")) == 1
