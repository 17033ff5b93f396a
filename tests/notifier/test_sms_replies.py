"""Two-way SMS: patients' replies, signed as Twilio signs them, posted to a real notifier; the
72 h reminder that asks the question is sent for real through the Twilio stand-in first."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from xml.etree import ElementTree

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from services.devkit.inbox import twiml_messages
from shared.config import Settings
from shared.store import appointments, consents, inbound_messages, patients
from shared.store.appointments import Appointment
from shared.web import REGISTRY
from tests.notifier.conftest import MOBILE, Notifier, StartNotifier, World

STRANGER = "+447700900999"


class Phone:
    """A patient's phone: sends replies as Twilio delivers them, reads the TwiML answer."""

    def __init__(self, http: aiohttp.ClientSession, notifier: Notifier, settings: Settings):
        self.http = http
        self.notifier = notifier
        self.settings = settings
        self.validator = RequestValidator("test-auth-token")

    async def send(
        self, body: str, *, sender: str = MOBILE, sid: str | None = None, opt_out: str = ""
    ) -> str | None:
        """Post one inbound SMS; the text Twilio would send back (None for no answer)."""
        params = {
            "MessageSid": sid or "SM" + secrets.token_hex(16),
            "AccountSid": "AC" + "0" * 31 + "1",
            "From": sender,
            "To": "+15005550006",
            "Body": body,
            "NumMedia": "0",
        }
        if opt_out:
            params["OptOutType"] = opt_out
        signature = self.validator.compute_signature(
            self.settings.twilio_callback_base + "/twilio/sms", params
        )
        async with self.http.post(
            self.notifier.base + "/twilio/sms",
            data=params,
            headers={"X-Twilio-Signature": signature},
        ) as response:
            assert response.status == 200, await response.text()
            assert response.content_type == "application/xml"
            text = await response.text()
        ElementTree.fromstring(text)  # well-formed TwiML
        messages = twiml_messages(text)
        assert len(messages) <= 1
        return messages[0] if messages else None


@pytest.fixture
async def phone(start_notifier: StartNotifier, settings: Settings) -> AsyncIterator[Phone]:
    notifier = await start_notifier()
    async with aiohttp.ClientSession() as http:
        yield Phone(http, notifier, settings)


async def _asked(world: World, appointment: Appointment) -> int:
    """Send the 72 h reminder ("Reply C to confirm") for real; its id once sent."""
    reminder = await world.reminder(appointment, kind="reminder_72h")
    await world.settled(reminder, "sent", "delivered")
    return reminder


async def _status(world: World, appointment_id: int) -> str:
    found = await appointments.get(world.pool, appointment_id)
    assert found is not None
    return found.status


async def _call_list(world: World) -> list[tuple[int, str]]:
    rows = await world.pool.fetch(
        "SELECT appointment_id, reason FROM call_task WHERE done_at IS NULL ORDER BY id"
    )
    return [(r["appointment_id"], r["reason"]) for r in rows]


async def _inbox(world: World) -> list[dict[str, object]]:
    rows = await world.pool.fetch(
        "SELECT i.reason, i.urgent, i.danger_words, i.patient_id, m.body FROM inbox_item i "
        "JOIN inbound_message m ON m.id = i.inbound_message_id ORDER BY i.id"
    )
    return [dict(r) for r in rows]


@pytest.mark.parametrize("word", ["c", " Yes! ", "CONFIRM"])
async def test_confirm_words_confirm_the_session_the_latest_request_asked_about(
    world: World, phone: Phone, word: str
) -> None:
    now = world.clock.now()
    earlier = await world.appointment(now + timedelta(days=3))
    later = await world.appointment(now + timedelta(days=3, hours=2))
    await _asked(world, earlier)
    await _asked(world, later)  # the latest request: a bare "C" answers it

    answer = await phone.send(word)

    assert await _status(world, later.id) == "confirmed"
    assert await _status(world, earlier.id) == "booked"
    assert answer is not None and "confirmed" in answer
    assert "Thu 5 Mar 11:00" in answer  # the later one's local date and time (London, GMT)
    events = await world.pool.fetch(
        "SELECT actor, details FROM appointment_event WHERE appointment_id = $1 "
        "AND to_status = 'confirmed'",
        later.id,
    )
    assert len(events) == 1 and events[0]["actor"].startswith("patient:")


async def test_the_same_webhook_twice_acts_once_and_answers_the_same(
    world: World, phone: Phone
) -> None:
    session = await world.appointment(world.clock.now() + timedelta(days=3))
    await _asked(world, session)
    sid = "SM" + secrets.token_hex(16)

    answers = await asyncio.gather(*(phone.send("C", sid=sid) for _ in range(4)))

    assert len(set(answers)) == 1 and answers[0] is not None and "confirmed" in answers[0]
    assert await world.pool.fetchval("SELECT count(*) FROM inbound_message") == 1
    transitions = await world.pool.fetchval(
        "SELECT count(*) FROM appointment_event WHERE appointment_id = $1 "
        "AND to_status = 'confirmed'",
        session.id,
    )
    assert transitions == 1
    # A second, distinct "C" finds nothing left to confirm and says so.
    again = await phone.send("C")
    assert again is not None and "already confirmed" in again


async def test_cancel_opts_out_of_sms_and_cancels_no_appointment(
    world: World, phone: Phone
) -> None:
    now = world.clock.now()
    session = await world.appointment(now + timedelta(days=3))
    await _asked(world, session)
    queued_sms = await world.reminder(session, due_at=now + timedelta(days=2))
    queued_email = await world.reminder(session, channel="email", due_at=now + timedelta(days=2))

    answer = await phone.send("CANCEL", opt_out="STOP")

    assert answer is None  # Twilio answers opt-outs itself
    assert await _status(world, session.id) == "booked"
    assert (await world.row(queued_sms)).status == "cancelled"
    assert (await world.row(queued_email)).status == "scheduled"
    patient = await patients.get(world.pool, world.patient_id)
    assert patient is not None and patient.sms_opted_out_at is not None
    current = await consents.current(world.pool, world.patient_id)
    assert not current["care_sms"].granted and current["care_email"].granted
    assert await _waiting_reminders(world, session.id) == {("reminder_24h", "email")}

    # START opts back in, the opt-in confirmation goes back, and reminders are texts again.
    welcome = await phone.send("START", opt_out="START")
    assert welcome is not None
    assert "STOP to opt out" in welcome and "HELP" in welcome
    patient = await patients.get(world.pool, world.patient_id)
    assert patient is not None and patient.sms_opted_out_at is None
    assert (await consents.current(world.pool, world.patient_id))["care_sms"].granted
    assert await _waiting_reminders(world, session.id) == {("reminder_24h", "sms")}


async def _waiting_reminders(world: World, appointment_id: int) -> set[tuple[str, str]]:
    rows = await world.pool.fetch(
        "SELECT kind, channel FROM notification WHERE appointment_id = $1 "
        "AND status = 'scheduled' AND kind LIKE 'reminder_%'",
        appointment_id,
    )
    return {(r["kind"], r["channel"]) for r in rows}


async def test_yes_after_an_opt_out_opts_back_in_instead_of_confirming(
    world: World, phone: Phone
) -> None:
    session = await world.appointment(world.clock.now() + timedelta(days=3))
    await _asked(world, session)
    assert await phone.send("STOP") is None

    welcome = await phone.send("yes")

    assert welcome is not None and "STOP to opt out" in welcome
    assert await _status(world, session.id) == "booked"


async def test_a_reply_from_an_unknown_number_goes_to_the_inbox_acknowledged_once_a_day(
    world: World, phone: Phone
) -> None:
    first = await phone.send("C", sender=STRANGER)
    second = await phone.send("hello? who is this", sender=STRANGER)

    assert first is not None and "get back to you" in first
    assert second is None  # one acknowledgement a day
    inbox = await _inbox(world)
    assert [(i["reason"], i["body"]) for i in inbox] == [
        ("unknown_number", "C"),
        ("unknown_number", "hello? who is this"),
    ]
    world.clock.advance(timedelta(days=1, minutes=1))
    assert await phone.send("still there?", sender=STRANGER) is not None


async def test_danger_words_get_the_emergency_answer_at_once_and_an_urgent_item(
    world: World, phone: Phone
) -> None:
    world.clock.advance(timedelta(hours=14))  # 23:00 in London: quiet hours do not apply

    answer = await phone.send("my lips are swelling")

    assert answer is not None
    assert "999" in answer and "call" in answer  # the demo clinic is in Great Britain
    (item,) = await _inbox(world)
    assert item["urgent"] is True
    assert item["danger_words"] == ["swelling of lips, tongue or face"]
    assert item["patient_id"] == world.patient_id
    # Every such message is answered, however many come; operators see them counted.
    assert await phone.send("now my throat feels tight") is not None
    registry = phone.notifier.app[REGISTRY]
    assert registry.get_sample_value("regimen_sms_replies_total", {"handled_as": "emergency"}) == 2


async def test_r_answers_with_the_private_link_and_puts_the_session_on_the_call_list(
    world: World, phone: Phone
) -> None:
    session = await world.appointment(world.clock.now() + timedelta(days=3))
    await _asked(world, session)

    answer = await phone.send("R")

    assert answer is not None and "https://clinic.example.test/" in answer
    assert await _call_list(world) == [(session.id, "reschedule_requested")]
    assert await _status(world, session.id) == "booked"
    await phone.send("RESCHEDULE")  # asked twice: still one task
    assert await _call_list(world) == [(session.id, "reschedule_requested")]


async def test_x_cancels_when_the_notice_allows_and_calls_instead_inside_it(
    world: World, phone: Phone
) -> None:
    now = world.clock.now()
    far = await world.appointment(now + timedelta(days=3))
    await _asked(world, far)

    cancelled = await phone.send("x")

    assert await _status(world, far.id) == "cancelled"
    assert cancelled is not None and "cancelled" in cancelled and "book again" in cancelled

    near = await world.appointment(now + timedelta(hours=20))  # notice: 24 h
    await _asked(world, near)
    refused = await phone.send("X")

    assert await _status(world, near.id) == "booked"
    assert refused is not None and "call us" in refused
    assert await _call_list(world) == [(near.id, "cancel_inside_notice")]


async def test_a_shared_number_acts_only_when_one_patient_was_asked_else_asks_which(
    world: World, phone: Phone
) -> None:
    now = world.clock.now()
    sibling = await world.new_patient(first_name="Billie")  # a parent's number, two children
    mine = await world.appointment(now + timedelta(days=3))
    theirs = await world.appointment(now + timedelta(days=3, hours=1), patient_id=sibling)
    await _asked(world, mine)

    assert "confirmed" in (await phone.send("C") or "")
    assert await _status(world, mine.id) == "confirmed"

    await _asked(world, theirs)
    later = await world.appointment(now + timedelta(days=4))
    await _asked(world, later)  # both children now have an open request
    which = await phone.send("C")

    assert await _status(world, theirs.id) == "booked"
    assert await _status(world, later.id) == "booked"
    assert which is not None
    assert "1 Alex (Fri 6 Mar 09:00), 2 Billie (Thu 5 Mar 10:00)" in which
    assert "Reply 1 or 2" in which

    assert await phone.send("7") is not None  # no such option: a person reads it
    answer = await phone.send("2")

    assert answer is not None and "Thu 5 Mar 10:00 is confirmed" in answer
    assert await _status(world, theirs.id) == "confirmed"
    assert await _status(world, later.id) == "booked"
    # The question is answered: another digit is not read as a second answer to it.
    await phone.send("1")
    assert await _status(world, later.id) == "booked"
    assert [i["reason"] for i in await _inbox(world)] == ["free_text", "free_text"]


async def test_help_answers_with_the_clinic_phone_and_stop(world: World, phone: Phone) -> None:
    answer = await phone.send("help", opt_out="HELP")

    clinic = await world.pool.fetchrow("SELECT name FROM clinic WHERE id = $1", world.clinic_id)
    assert answer is not None
    assert clinic["name"] in answer and "STOP" in answer and "call" in answer


async def test_a_confirm_with_nothing_asked_goes_to_the_inbox(world: World, phone: Phone) -> None:
    await world.appointment(world.clock.now() + timedelta(days=3))  # never asked

    answer = await phone.send("C")

    assert answer is not None and "get back to you" in answer
    assert [i["reason"] for i in await _inbox(world)] == ["nothing_asked"]


async def test_replies_are_handled_in_the_order_they_came(world: World, phone: Phone) -> None:
    """A reply whose handling did not finish (stored, then the process died) is handled before
    the next reply from the same number, and its own redelivery gets its own answer."""
    session = await world.appointment(world.clock.now() + timedelta(days=3))
    await _asked(world, session)
    first_sid = "SM" + secrets.token_hex(16)
    await inbound_messages.insert(
        world.pool,
        message_sid=first_sid,
        from_number=MOBILE,
        to_number="+15005550006",
        body="C",
        opt_out_type=None,
        received_at=world.clock.now(),
    )

    second = await phone.send("X")

    assert second is not None and "cancelled" in second
    handled = await world.pool.fetch(
        "SELECT body, handled_as FROM inbound_message ORDER BY handled_at, id"
    )
    assert [(r["body"], r["handled_as"]) for r in handled] == [
        ("C", "confirmed"),
        ("X", "cancelled"),
    ]
    assert await _status(world, session.id) == "cancelled"
    redelivered = await phone.send("C", sid=first_sid)
    assert redelivered is not None and "is confirmed" in redelivered


async def test_the_private_link_is_sent_but_never_stored(world: World, phone: Phone) -> None:
    session = await world.appointment(world.clock.now() + timedelta(days=3))
    await _asked(world, session)

    answer = await phone.send("R")

    assert answer is not None
    link = next(word for word in answer.split() if word.startswith("https://"))
    stored = await world.pool.fetchval("SELECT answer FROM inbound_message")
    assert link.rstrip(".") not in stored and "{private-link}" in stored
