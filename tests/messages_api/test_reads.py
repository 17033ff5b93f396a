"""Reading messages: a patient's and an appointment's lists with pagination, one message with its
history and attempts, masked recipients, no message text, and an audit row for every read."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from tests.messages_api.conftest import EMAIL, MOBILE, SECRET_TEXT, Outbox

PATIENT_LIST = "/api/v1/patients/{id}/messages"
APPOINTMENT_LIST = "/api/v1/appointments/{id}/messages"
MESSAGE = "/api/v1/messages/{id}"


def dumped(body: object) -> str:
    return json.dumps(body)


async def test_patient_list_shows_delivery_facts_but_no_text_and_a_masked_recipient(
    outbox: Outbox,
) -> None:
    sent_at = outbox.now
    sms = await outbox.add(
        status="delivered", segments=2, sent_at=sent_at, attempts=1, provider_id="SM" + "a" * 32
    )
    email = await outbox.add(kind="booking_confirmation", channel="email")
    failed = await outbox.add(
        kind="reminder_72h",
        status="failed",
        error_code=21211,
        status_reason="21211: The 'To' number " + MOBILE + " is not a valid phone number",
        attempts=1,
    )

    reply = await outbox.call("GET", PATIENT_LIST.format(id=outbox.patient_id), role="clinician")

    assert reply.status == 200, reply.body
    items = {item["id"]: item for item in reply.body["items"]}
    assert [item["id"] for item in reply.body["items"]] == [failed, email, sms]  # newest first
    assert reply.body["next_cursor"] is None
    assert items[sms]["status"] == "delivered"
    assert items[sms]["segments"] == 2 and items[sms]["attempts"] == 1
    assert datetime.fromisoformat(items[sms]["sent_at"]) == sent_at
    assert items[sms]["recipient"] == "+44 **** ***456"
    assert items[email]["recipient"] == "a***@example.com"
    assert items[email]["status"] == "scheduled" and items[email]["channel"] == "email"
    assert items[failed]["error_code"] == 21211
    assert items[failed]["status_reason"] == (
        "21211: The 'To' number +44 **** ***456 is not a valid phone number"
    )
    text = dumped(reply.body)
    assert SECRET_TEXT not in text and "body" not in items[sms] and "context" not in items[sms]
    assert "7700900456" not in text and EMAIL not in text


async def test_every_read_is_audited_with_the_ids_it_showed(outbox: Outbox) -> None:
    first = await outbox.add()
    await outbox.call("GET", PATIENT_LIST.format(id=outbox.patient_id), role="clinician")
    await outbox.call("GET", APPOINTMENT_LIST.format(id=outbox.appointment_id))
    await outbox.call("GET", MESSAGE.format(id=first), role="admin")
    empty_patient = await outbox.new_patient("Grace")
    await outbox.call("GET", PATIENT_LIST.format(id=empty_patient))

    rows = await outbox.audit("messages.read")

    clinician = await outbox.staff_id("clinician")
    assert [(r["entity"], r["entity_id"], r["patient_id"]) for r in rows] == [
        ("patient", outbox.patient_id, outbox.patient_id),
        ("appointment", outbox.appointment_id, outbox.patient_id),
        ("notification", first, outbox.patient_id),
        # An empty list still tells something about the patient.
        ("patient", empty_patient, empty_patient),
    ]
    assert rows[0]["details"] == {"via": "patient", "notification_ids": [first]}
    assert (rows[0]["actor_kind"], rows[0]["actor_id"]) == ("staff", clinician)
    assert rows[3]["details"]["notification_ids"] == []
    assert all(r["request_id"] for r in rows)


async def test_lists_page_through_every_message_once(outbox: Outbox) -> None:
    created = [await outbox.add(kind=f"reminder_{n}") for n in range(5)]
    other_patient = await outbox.new_patient("Grace", mobile="+447700900999")
    await outbox.add(patient_id=other_patient, appointment_id=None)

    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        reply = await outbox.call("GET", PATIENT_LIST.format(id=outbox.patient_id), params=params)
        assert reply.status == 200, reply.body
        seen += [item["id"] for item in reply.body["items"]]
        pages += 1
        cursor = reply.body["next_cursor"]
        if cursor is None:
            break

    assert seen == sorted(created, reverse=True)
    assert pages == 3
    # A full last page says there is nothing more, rather than sending the client to an empty one.
    exact = await outbox.call(
        "GET", PATIENT_LIST.format(id=outbox.patient_id), params={"limit": "5"}
    )
    assert len(exact.body["items"]) == 5 and exact.body["next_cursor"] is None


async def test_appointment_list_holds_only_that_appointments_messages(outbox: Outbox) -> None:
    mine = [await outbox.add(), await outbox.add(kind="reminder_72h", channel="email")]
    other_appointment = await outbox.new_appointment(outbox.now + timedelta(days=3))
    await outbox.add(appointment_id=other_appointment)
    await outbox.add(kind="opt_in_confirmation", appointment_id=None)

    reply = await outbox.call("GET", APPOINTMENT_LIST.format(id=outbox.appointment_id))

    assert reply.status == 200
    assert [item["id"] for item in reply.body["items"]] == sorted(mine, reverse=True)
    assert {item["appointment_id"] for item in reply.body["items"]} == {outbox.appointment_id}


async def test_one_message_shows_its_history_and_attempts_with_addresses_masked(
    outbox: Outbox,
) -> None:
    message = await outbox.add()
    await outbox.move(message, "sending", attempts=1)
    await outbox.attempt(
        message,
        outcome="temporary",
        error_code=20429,
        detail=f"Too Many Requests sending to {MOBILE}",
    )
    await outbox.move(message, "scheduled", status_reason="retry in 30 s after 20429")
    await outbox.move(message, "sending", attempts=2)
    await outbox.attempt(message, outcome="sent", provider_id="SM" + "b" * 32)
    await outbox.move(message, "sent", segments=1, provider_id="SM" + "b" * 32)

    reply = await outbox.call("GET", MESSAGE.format(id=message), role="clinician")

    assert reply.status == 200, reply.body
    body = reply.body
    assert body["status"] == "sent" and body["attempts"] == 2 and body["segments"] == 1
    assert body["provider_id"] == "SM" + "b" * 32
    assert body["template"] == "reminder_24h" and body["language"] == "en"
    assert [(e["from_status"], e["to_status"]) for e in body["history"]] == [
        (None, "scheduled"),
        ("scheduled", "sending"),
        ("sending", "scheduled"),
        ("scheduled", "sending"),
        ("sending", "sent"),
    ]
    assert body["history"][0]["reason"] == "planned"
    assert body["history"][2]["reason"] == "retry in 30 s after 20429"
    assert [(a["outcome"], a["error_code"]) for a in body["attempt_log"]] == [
        ("temporary", 20429),
        ("sent", None),
    ]
    assert body["attempt_log"][0]["detail"] == "Too Many Requests sending to +44 **** ***456"
    assert body["attempt_log"][1]["provider_id"] == "SM" + "b" * 32
    assert SECRET_TEXT not in dumped(body) and "7700900456" not in dumped(body)


async def test_a_staff_alert_shows_its_fixed_recipient_masked(outbox: Outbox) -> None:
    alert = await outbox.add(
        kind="staff_alert", recipient="+447700900777", urgent=True, appointment_id=None
    )
    reply = await outbox.call("GET", MESSAGE.format(id=alert))
    assert reply.body["recipient"] == "+44 **** ***777" and reply.body["urgent"] is True


async def test_an_erased_patients_messages_have_no_recipient(outbox: Outbox) -> None:
    message = await outbox.add()
    await outbox.pool.execute(
        "UPDATE patient SET mobile = NULL, email = NULL WHERE id = $1", outbox.patient_id
    )
    reply = await outbox.call("GET", MESSAGE.format(id=message))
    assert reply.status == 200 and reply.body["recipient"] is None


async def test_unknown_ids_are_404_and_leave_no_audit_row(outbox: Outbox) -> None:
    for path in (
        PATIENT_LIST.format(id=999999),
        APPOINTMENT_LIST.format(id=999999),
        MESSAGE.format(id=999999),
        MESSAGE.format(id="abc"),
        "/api/v1/messages/99999999999999999999",
    ):
        reply = await outbox.call("GET", path)
        assert reply.status == 404, path
        assert reply.headers["Content-Type"].startswith("application/problem+json")
    assert await outbox.audit("messages.read") == []


async def test_bad_paging_parameters_are_422_naming_the_field(outbox: Outbox) -> None:
    path = PATIENT_LIST.format(id=outbox.patient_id)
    for params, field in (
        ({"limit": "0"}, "limit"),
        ({"limit": "500"}, "limit"),
        ({"cursor": "not-ours"}, "cursor"),
        ({"cursor": "aWQ6OTk5OTk5OTk5OTk5OTk5OTk5OTk5"}, "cursor"),  # an id past bigint
        ({"status": "sent"}, "status"),
    ):
        reply = await outbox.call("GET", path, params=params)
        assert reply.status == 422, (params, reply.body)
        assert [e["path"] for e in reply.body["errors"]] == [field]
