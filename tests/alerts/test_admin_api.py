"""The care team, rota, escalation list and alerts through the admin API: a bad mobile or email
is named, only admins change the team, any staff member acknowledges (recorded and audited), and
an acknowledged alert stops escalating."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from shared.db.transactions import in_transaction
from shared.domain import alerts
from shared.store.staff_alerts import StaffAlert
from tests.conftest import BookingApi, Reply


def paths(reply: Reply) -> set[str]:
    return {error["path"] for error in reply.body["errors"]}


async def _raise(api: BookingApi, tier: str = "urgent") -> StaffAlert:
    async def work(conn: asyncpg.Connection) -> StaffAlert:
        return await alerts.raise_alert(
            conn,
            clinic_id=api.clinic_id,
            tier=tier,  # type: ignore[arg-type]
            patient_id=None,
            now=api.clock.now(),
            summary="reported by phone",
        )

    return await in_transaction(api.pool, work)


async def test_a_bad_mobile_or_email_is_named_and_nothing_is_stored(
    booking_api: BookingApi,
) -> None:
    api = booking_api
    path = f"/api/v1/clinics/{api.clinic_id}/care-team"
    before = (await api.call("GET", path, role="admin")).body
    for mobile, email in (
        ("07700 900123", "ok@example.com"),
        ("+4400000", "ok@example.com"),
        ("+999123456789", "ok@example.com"),
        ("+447700900123", "not an address"),
    ):
        reply = await api.call(
            "POST",
            path,
            role="admin",
            json={"name": "Dr New", "role": "clinician", "mobile": mobile, "email": email},
        )
        assert reply.status == 422, reply.body
        assert reply.headers["Content-Type"].startswith("application/problem+json")
        assert paths(reply) == ({"email"} if email == "not an address" else {"mobile"})
    assert (await api.call("GET", path, role="admin")).body == before


async def test_only_admins_change_the_care_team_and_every_change_is_audited(
    booking_api: BookingApi,
) -> None:
    api = booking_api
    path = f"/api/v1/clinics/{api.clinic_id}/care-team"
    member = {
        "name": "Dr New",
        "role": "clinician",
        "mobile": "+447700900399",
        "email": "new@regimen.localhost",
    }
    for role in ("clinician", "front_desk"):
        assert (await api.call("POST", path, role=role, json=member)).status == 403
    created = await api.call("POST", path, role="admin", json=member)
    assert created.status == 201, created.body
    member_id = created.body["id"]

    shift = await api.call(
        "POST",
        f"/api/v1/clinics/{api.clinic_id}/on-call",
        role="admin",
        json={
            "member_id": member_id,
            "starts_at": "2026-03-02T09:00:00Z",
            "ends_at": "2026-03-02T08:00:00Z",
        },
    )
    assert shift.status == 422 and paths(shift) == {"ends_at"}
    shift = await api.call(
        "POST",
        f"/api/v1/clinics/{api.clinic_id}/on-call",
        role="admin",
        json={
            "member_id": member_id,
            "starts_at": "2026-03-02T08:00:00Z",
            "ends_at": "2026-03-03T08:00:00Z",
        },
    )
    assert shift.status == 201, shift.body
    now = await api.call("GET", f"/api/v1/clinics/{api.clinic_id}/on-call-now", role="front_desk")
    assert now.body["member"]["id"] == member_id  # the shift that started last wins

    listed = await api.call(
        "PUT",
        f"/api/v1/clinics/{api.clinic_id}/escalation",
        role="admin",
        json={"steps": [{"on_call": True}, {"member_id": 999999}], "escalate_after_minutes": 10},
    )
    assert listed.status == 404 and paths(listed) == {"steps.1.member_id"}
    listed = await api.call(
        "PUT",
        f"/api/v1/clinics/{api.clinic_id}/escalation",
        role="admin",
        json={"steps": [{"on_call": True}, {"member_id": member_id}], "escalate_after_minutes": 10},
    )
    assert listed.status == 200, listed.body
    assert [s["member_id"] for s in listed.body["steps"]] == [None, member_id]
    assert listed.body["escalate_after_minutes"] == 10
    assert listed.body["callback_target_minutes"] == 60

    actions = await api.pool.fetch(
        "SELECT action, entity FROM audit_log WHERE entity IN "
        "('care_team_member', 'on_call_shift', 'escalation_list') ORDER BY id"
    )
    assert [(r["action"], r["entity"]) for r in actions] == [
        ("create", "care_team_member"),
        ("create", "on_call_shift"),
        ("replace", "escalation_list"),
    ]

    # The new member is alerted now; from then on they can only be deactivated.
    alert = await _raise(api, "emergency")
    assert alert.recipient_member_id == member_id
    removed = await api.call("DELETE", f"/api/v1/care-team/{member_id}", role="admin")
    assert removed.status == 409 and removed.body["type"].endswith("member-has-alerts")


async def test_any_staff_member_acknowledges_an_open_alert_once_and_it_stops_escalating(
    booking_api: BookingApi,
) -> None:
    api = booking_api
    alert = await _raise(api)
    listed = await api.call("GET", "/api/v1/alerts", role="front_desk")
    assert [a["id"] for a in listed.body["items"]] == [alert.id]
    shown = listed.body["items"][0]
    assert shown["status"] == "open" and shown["reached_anyone"] is True
    assert [m["channel"] for m in shown["messages"]] == ["sms", "email"]

    api.clock.advance(timedelta(minutes=5))
    done = await api.call(
        "POST",
        f"/api/v1/alerts/{alert.id}/acknowledge",
        role="clinician",
        json={"note": "called the patient back"},
    )
    assert done.status == 200, done.body
    assert done.body["status"] == "acknowledged" and done.body["escalate_at"] is None
    assert done.body["acknowledged_at"].startswith("2026-03-02T09:05")
    assert done.body["acknowledged_by"].startswith("staff:")
    again = await api.call("POST", f"/api/v1/alerts/{alert.id}/acknowledge", role="admin", json={})
    assert again.status == 409 and again.body["acknowledged_by"] == done.body["acknowledged_by"]
    assert (await api.call("GET", "/api/v1/alerts", role="admin")).body["items"] == []
    audited = await api.pool.fetch(
        "SELECT actor_name, reason FROM audit_log WHERE action = 'staff_alert.acknowledge'"
    )
    assert [(r["actor_name"], r["reason"]) for r in audited] == [
        ("test clinician (clinician)", "called the patient back")
    ]
    missing = await api.call("POST", "/api/v1/alerts/999999/acknowledge", role="admin", json={})
    assert missing.status == 404
