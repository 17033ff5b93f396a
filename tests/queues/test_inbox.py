"""The staff inbox through the real HTTP API: the order items are read in, filters, the masked
number, marking handled once, and replies through the outbox (refused when the patient cannot
be texted)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from shared.config import Settings
from shared.messaging.context import load_context
from shared.messaging.render import render
from shared.store import consents, notifications
from tests.queues.conftest import MOBILE, Queues

INBOX = "/api/v1/inbox"


async def test_open_items_come_urgent_first_then_oldest_and_handled_ones_stay_out(
    queues: Queues,
) -> None:
    old = await queues.inbox_item("is parking free?", at=queues.now - timedelta(hours=3))
    urgent = await queues.inbox_item(
        "my lips are swelling", danger_words=("swelling",), at=queues.now - timedelta(hours=1)
    )
    new = await queues.inbox_item("thanks!", at=queues.now - timedelta(minutes=5))
    done = await queues.inbox_item("see you", at=queues.now - timedelta(hours=5))
    handled = await queues.call("POST", f"{INBOX}/{done}/handled", json={"note": "nothing to do"})
    assert handled.status == 200, handled.body

    reply = await queues.call("GET", INBOX)

    assert reply.status == 200, reply.body
    assert [i["id"] for i in reply.body["items"]] == [urgent, old, new]
    first = reply.body["items"][0]
    assert first["urgent"] is True and first["danger_words"] == ["swelling"]
    assert first["text"] == "my lips are swelling"
    only_urgent = await queues.call("GET", INBOX, params={"urgent": "true"})
    assert [i["id"] for i in only_urgent.body["items"]] == [urgent]
    only_handled = await queues.call("GET", INBOX, params={"status": "handled"})
    assert [i["id"] for i in only_handled.body["items"]] == [done]
    everything = await queues.call("GET", INBOX, params={"status": "all"})
    assert [i["id"] for i in everything.body["items"]] == [urgent, done, old, new]


async def test_pages_of_one_walk_the_inbox_in_its_order_without_repeats(queues: Queues) -> None:
    expected = [
        await queues.inbox_item("fever", danger_words=("fever",), at=queues.now),
        await queues.inbox_item("a", at=queues.now - timedelta(hours=2)),
        await queues.inbox_item("b", at=queues.now - timedelta(hours=1)),
    ]
    seen, cursor = [], None
    for _ in range(5):
        params = {"limit": "1", **({"cursor": cursor} if cursor else {})}
        page = await queues.call("GET", INBOX, params=params)
        assert page.status == 200, page.body
        seen += [i["id"] for i in page.body["items"]]
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert seen == expected


async def test_a_clinic_filter_keeps_unknown_numbers_and_drops_other_clinics(
    queues: Queues,
) -> None:
    other = await queues.call(
        "POST",
        "/api/v1/clinics",
        role="admin",
        json={"name": "Paris", "time_zone": "Europe/Paris", "phone": "+33142685300"},
    )
    assert other.status == 201, other.body
    ours = await queues.inbox_item("ours")
    unknown = await queues.inbox_item(
        "who is this?",
        patient_id=None,
        clinic_id=None,
        from_number="+447700900999",
        reason="unknown_number",
    )
    theirs = await queues.inbox_item("theirs", patient_id=None, clinic_id=other.body["id"])

    mine = await queues.call("GET", INBOX, params={"clinic_id": str(queues.clinic_id)})

    assert [i["id"] for i in mine.body["items"]] == [ours, unknown]
    assert theirs in [i["id"] for i in (await queues.call("GET", INBOX)).body["items"]]


async def test_a_typo_in_a_filter_value_is_a_422_naming_it(queues: Queues) -> None:
    reply = await queues.call("GET", INBOX, params={"status": "closed"})
    assert reply.status == 422
    assert [(e["in"], e["path"]) for e in reply.body["errors"]] == [("query", "status")]


async def test_one_item_shows_the_text_the_masked_number_and_the_patient_and_is_audited(
    queues: Queues,
) -> None:
    item = await queues.inbox_item("can I wash my hair tonight?")

    reply = await queues.call("GET", f"{INBOX}/{item}", role="clinician")

    assert reply.status == 200, reply.body
    assert reply.body["text"] == "can I wash my hair tonight?"
    assert reply.body["from_number"] == "+44 **** ***456" and MOBILE not in str(reply.body)
    assert reply.body["patient"] == {
        "id": queues.patient_id,
        "first_name": "Ada",
        "last_name": "Lovelace",
    }
    [read] = await queues.audit("messages.read")
    assert read["patient_id"] == queues.patient_id and read["details"]["via"] == "inbox"
    assert read["details"]["inbox_item_ids"] == [item]
    assert (await queues.call("GET", f"{INBOX}/999999")).status == 404


async def test_an_unknown_number_has_no_patient(queues: Queues) -> None:
    item = await queues.inbox_item(
        "hello?", patient_id=None, from_number="+447700900123", reason="unknown_number"
    )
    body = (await queues.call("GET", f"{INBOX}/{item}")).body
    assert body["patient"] is None and body["from_number"] == "+44 **** ***123"


async def test_handling_an_item_twice_is_a_409_naming_who_did_it_first(queues: Queues) -> None:
    item = await queues.inbox_item()
    first = await queues.call("POST", f"{INBOX}/{item}/handled", json={"note": "phoned her"})
    assert first.status == 200, first.body
    assert first.body["handled_at"] is not None and first.body["note"] == "phoned her"
    assert first.body["handled_by"] == "test front_desk (front_desk)"

    again = await queues.call(
        "POST", f"{INBOX}/{item}/handled", role="admin", json={"note": "phoned too"}
    )

    assert again.status == 409, again.body
    assert again.body["type"].endswith("/already-handled")
    assert again.body["handled_by"] == "test front_desk (front_desk)"
    [audit] = await queues.audit("inbox.handled")
    assert audit["reason"] == "phoned her" and audit["entity_id"] == item
    assert (await queues.call("GET", f"{INBOX}/{item}")).body["note"] == "phoned her"


async def test_a_blank_note_is_refused(queues: Queues) -> None:
    item = await queues.inbox_item()
    reply = await queues.call("POST", f"{INBOX}/{item}/handled", json={"note": "  "})
    assert reply.status == 422
    assert [e["path"] for e in reply.body["errors"]] == ["note"]


async def test_a_clinician_reads_the_inbox_but_does_not_close_or_answer_items(
    queues: Queues,
) -> None:
    item = await queues.inbox_item()
    assert (await queues.call("GET", INBOX, role="clinician")).status == 200
    for action, body in (("handled", {"note": "x"}), ("reply", {"text": "hello"})):
        reply = await queues.call("POST", f"{INBOX}/{item}/{action}", role="clinician", json=body)
        assert reply.status == 403, (action, reply.body)
    assert (await queues.call("GET", INBOX, role=None)).status == 401


# -- replies ---------------------------------------------------------------------------------------


async def test_a_reply_is_an_urgent_sms_through_the_outbox_and_closes_the_item(
    queues: Queues,
) -> None:
    item = await queues.inbox_item()

    reply = await queues.call(
        "POST", f"{INBOX}/{item}/reply", json={"text": "Yes, from tomorrow morning."}
    )

    assert reply.status == 201, reply.body
    message = reply.body["message"]
    assert reply.headers["Location"] == f"/api/v1/messages/{message['id']}"
    assert (message["kind"], message["channel"], message["template"]) == ("reply", "sms", "reply")
    assert message["urgent"] is True and message["status"] == "scheduled"
    assert message["recipient"] == "+44 **** ***456"
    row = await queues.notification(message["id"])
    assert row["context"]["text"] == "Yes, from tomorrow morning."
    assert row["patient_id"] == queues.patient_id and row["recipient"] is None
    assert row["due_at"] == queues.now
    assert reply.body["item"]["handled_at"] is not None
    assert (await queues.call("GET", INBOX)).body["items"] == []
    [audit] = await queues.audit("inbox.reply")
    assert audit["details"]["notification_id"] == message["id"]
    # The reply shows in the patient's messages like any other.
    listed = await queues.call("GET", f"/api/v1/patients/{queues.patient_id}/messages")
    assert [m["id"] for m in listed.body["items"]] == [message["id"]]


async def test_the_reply_renders_as_the_clinics_answer_with_the_staff_text(
    queues: Queues, settings: Settings
) -> None:
    """What the notifier will send: the clinic's name and the text as staff wrote it, to the
    patient's mobile; to the sender's own number when nobody's record has it."""
    item = await queues.inbox_item()
    stranger = await queues.inbox_item(
        "hi", patient_id=None, from_number="+447700900777", reason="unknown_number"
    )
    for item_id, to in ((item, MOBILE), (stranger, "+447700900777")):
        reply = await queues.call("POST", f"{INBOX}/{item_id}/reply", json={"text": "Yes & no <b>"})
        assert reply.status == 201, reply.body
        row = await notifications.rows.get(queues.pool, reply.body["message"]["id"])
        assert row is not None
        ctx = await load_context(queues.pool, row, settings=settings, now=queues.now)
        composed = render(row, ctx, settings=settings)
        assert composed.to == to
        assert composed.body == "Regimen Demo Hair Clinic: Yes & no <b>"


async def test_keep_open_replies_and_leaves_the_item_open(queues: Queues) -> None:
    item = await queues.inbox_item()
    reply = await queues.call(
        "POST", f"{INBOX}/{item}/reply", json={"text": "Checking with Dr Hart.", "keep_open": True}
    )
    assert reply.status == 201, reply.body
    assert reply.body["item"]["handled_at"] is None
    assert [i["id"] for i in (await queues.call("GET", INBOX)).body["items"]] == [item]
    assert await queues.audit("inbox.handled") == []


async def test_a_retried_reply_with_the_same_key_sends_once(queues: Queues) -> None:
    item = await queues.inbox_item()
    headers = {"Idempotency-Key": "reply-1"}
    body = {"text": "See you Tuesday.", "keep_open": True}
    first = await queues.call("POST", f"{INBOX}/{item}/reply", json=body, headers=headers)
    second = await queues.call("POST", f"{INBOX}/{item}/reply", json=body, headers=headers)
    assert first.status == second.status == 201
    assert first.body["message"]["id"] == second.body["message"]["id"]
    count = await queues.pool.fetchval("SELECT count(*) FROM notification WHERE kind = 'reply'")
    assert count == 1


async def test_no_reply_goes_to_a_patient_who_opted_out_of_sms(queues: Queues) -> None:
    item = await queues.inbox_item()
    await queues.pool.execute(
        "UPDATE patient SET sms_opted_out_at = $2 WHERE id = $1", queues.patient_id, queues.now
    )

    reply = await queues.call("POST", f"{INBOX}/{item}/reply", json={"text": "Hello"})

    assert reply.status == 409, reply.body
    assert reply.body["type"].endswith("/sms-opted-out")
    assert "opted out" in reply.body["detail"]
    assert await queues.pool.fetchval("SELECT count(*) FROM notification") == 0
    assert (await queues.call("GET", f"{INBOX}/{item}")).body["handled_at"] is None


async def test_no_reply_goes_to_a_patient_without_a_mobile(queues: Queues) -> None:
    patient = await queues.new_patient("Grace", mobile=None)
    item = await queues.inbox_item(patient_id=patient, reason="several_patients")
    reply = await queues.call("POST", f"{INBOX}/{item}/reply", json={"text": "Hello"})
    assert reply.status == 409, reply.body
    assert reply.body["type"].endswith("/no-mobile")
    assert await queues.pool.fetchval("SELECT count(*) FROM notification") == 0


async def test_a_reply_needs_no_care_sms_consent_it_answers_the_patient(queues: Queues) -> None:
    """Consent to care reminders is not consent to be answered: withdrawing it does not stop
    the clinic answering the patient's own question (the notifier sends replies without it)."""
    await consents.insert(
        queues.pool,
        queues.patient_id,
        kind="care_sms",
        granted=False,
        source="test",
        wording_version="v1",
        now=queues.now,
    )
    item = await queues.inbox_item()
    reply = await queues.call("POST", f"{INBOX}/{item}/reply", json={"text": "Yes"})
    assert reply.status == 201, reply.body


async def test_a_reply_to_an_unknown_number_goes_to_that_number(queues: Queues) -> None:
    item = await queues.inbox_item(
        "who is this?", patient_id=None, from_number="+447700900777", reason="unknown_number"
    )
    reply = await queues.call(
        "POST", f"{INBOX}/{item}/reply", json={"text": "This is the clinic; who is asking?"}
    )
    assert reply.status == 201, reply.body
    row = await queues.notification(reply.body["message"]["id"])
    assert row["recipient"] == "+447700900777" and row["patient_id"] is None
    assert row["clinic_id"] == queues.clinic_id


async def test_an_unknown_number_no_clinic_has_needs_the_answering_clinic(queues: Queues) -> None:
    item = await queues.inbox_item(
        "hi",
        patient_id=None,
        clinic_id=None,
        from_number="+447700900777",
        reason="unknown_number",
    )
    path = f"{INBOX}/{item}/reply"

    refused = await queues.call("POST", path, json={"text": "Who is this?"})
    assert refused.status == 422, refused.body
    assert [e["path"] for e in refused.body["errors"]] == ["clinic_id"]

    nowhere = await queues.call("POST", path, json={"text": "Who?", "clinic_id": 99999})
    assert nowhere.status == 422, nowhere.body
    assert [e["path"] for e in nowhere.body["errors"]] == ["clinic_id"]

    sent = await queues.call("POST", path, json={"text": "Who?", "clinic_id": queues.clinic_id})
    assert sent.status == 201, sent.body
    assert (await queues.notification(sent.body["message"]["id"]))["clinic_id"] == queues.clinic_id


async def test_no_reply_to_a_number_outside_the_clinics_sms_countries(queues: Queues) -> None:
    """SMS pumping runs up bills with texts to far-away numbers: an unknown sender abroad is
    phoned back, not texted."""
    item = await queues.inbox_item(
        "hi", patient_id=None, from_number="+8613800138000", reason="unknown_number"
    )
    reply = await queues.call("POST", f"{INBOX}/{item}/reply", json={"text": "Hello"})
    assert reply.status == 409, reply.body
    assert reply.body["type"].endswith("/sms-country")


async def test_an_empty_or_overlong_reply_is_refused(queues: Queues) -> None:
    item = await queues.inbox_item()
    for text in ("", "x" * 641):
        reply = await queues.call("POST", f"{INBOX}/{item}/reply", json={"text": text})
        assert reply.status == 422, reply.body
        assert [e["path"] for e in reply.body["errors"]] == ["text"]


async def test_two_desks_closing_the_same_item_at_once_close_it_once(queues: Queues) -> None:
    item = await queues.inbox_item()
    path = f"{INBOX}/{item}/handled"
    replies = await asyncio.gather(
        *(
            queues.call("POST", path, role=role, json={"note": f"done by {role}"})
            for role in ("front_desk", "admin", "front_desk", "admin")
        )
    )
    assert sorted(r.status for r in replies) == [200, 409, 409, 409]
    assert len(await queues.audit("inbox.handled")) == 1


async def test_two_desks_replying_at_once_both_send_and_the_item_is_closed_once(
    queues: Queues,
) -> None:
    """Two answers are two messages (each person wrote one); the item closes once."""
    item = await queues.inbox_item()
    path = f"{INBOX}/{item}/reply"
    replies = await asyncio.gather(
        queues.call("POST", path, json={"text": "Yes."}),
        queues.call("POST", path, role="admin", json={"text": "Yes, you can."}),
    )
    assert [r.status for r in replies] == [201, 201]
    assert await queues.pool.fetchval("SELECT count(*) FROM notification") == 2
    assert len(await queues.audit("inbox.handled")) == 1
