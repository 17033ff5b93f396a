"""Aftercare check-ins, end to end: a course session completed through the domain action plans
the treatment's four check-ins (the clinical defaults) at the right local times across the
March clock change and outside quiet hours; the notifier sends them for real (Twilio stand-in,
aiosmtpd); the patient's SMS reply or emailed link records the answer and its tier and gets the
tier's answer; the follow-up sweep nudges once, then files a call task; a patient who opts out
after completion gets the rest by email; one with neither channel is phoned. Safety follow-up
is never silently dropped."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from services.booking.domain import actions
from services.scheduler.check_in_follow_up import follow_up
from shared.config import Settings
from shared.db.transactions import in_transaction
from shared.domain.appointment_changes import Change
from shared.store import check_ins
from shared.store.audit import Actor
from shared.store.check_ins import CheckIn
from tests import factories
from tests.conftest import SmtpSink, StandIn
from tests.notifier.conftest import EMAIL, MOBILE, Notifier, StartNotifier, World
from tests.notifier.test_sms_replies import Phone

LONDON = ZoneInfo("Europe/London")


def london(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=LONDON).astimezone(UTC)


@pytest.fixture
async def notifier(start_notifier: StartNotifier) -> Notifier:
    return await start_notifier()


@pytest.fixture
async def phone(notifier: Notifier, settings: Settings) -> AsyncIterator[Phone]:
    async with aiohttp.ClientSession() as http:
        yield Phone(http, notifier, settings)


async def complete_session(world: World, at: datetime, patient_id: int | None = None) -> int:
    """A hair mesotherapy session (the seeded course, with the default check-in plan) checked
    in and completed by a clinician at `at` (the clock is moved there)."""
    if at > world.clock.now():
        world.clock.advance(at - world.clock.now())
    treatment_id = int(
        await world.pool.fetchval("SELECT id FROM treatment WHERE code = 'hair-mesotherapy'")
    )
    appointment_id = await factories.appointment(
        world.pool,
        clinic_id=world.clinic_id,
        practitioner_id=world.practitioner_id,
        treatment_id=treatment_id,
        patient_id=patient_id or world.patient_id,
        starts_at=at - timedelta(minutes=30),
        now=at,
        status="checked_in",
    )
    version = int(
        await world.pool.fetchval("SELECT version FROM appointment WHERE id = $1", appointment_id)
    )
    change = Change(Actor("staff", None, "Dr Hart"), at)

    async def work(conn: Any) -> None:
        await actions.act(
            conn, appointment_id, state=actions.COMPLETE, expected_version=version, change=change
        )

    await in_transaction(world.pool, work)
    return appointment_id


async def planned(world: World, appointment_id: int) -> list[CheckIn]:
    return await check_ins.for_appointment(world.pool, appointment_id)


async def rows(world: World, appointment_id: int) -> list[dict[str, Any]]:
    found = await world.pool.fetch(
        """SELECT id, channel, status, due_at, dedupe_key, context FROM notification
        WHERE kind = 'check_in' AND appointment_id = $1 ORDER BY id""",
        appointment_id,
    )
    return [dict(r) for r in found]


async def move_to(world: World, notifier: Notifier, moment: datetime) -> None:
    if moment > world.clock.now():
        await notifier.advance(world.clock, moment - world.clock.now())


async def sent_row(world: World, notification_id: int) -> None:
    await world.settled(notification_id, "sent", "delivered")


async def open_calls(world: World) -> list[tuple[int, str]]:
    found = await world.pool.fetch(
        "SELECT appointment_id, reason FROM call_task WHERE done_at IS NULL ORDER BY id"
    )
    return [(r["appointment_id"], r["reason"]) for r in found]


# -- planning -------------------------------------------------------------------------------------


async def test_four_check_ins_at_the_right_local_times_across_the_march_clock_change(
    world: World,
) -> None:
    """Completed Friday 26 March 2027 10:00 London (GMT); the clocks go forward on Sunday 28th.
    24 h and 72 h are elapsed time; 7 and 21 days are calendar days at the same local hour."""
    appointment_id = await complete_session(world, london(date(2027, 3, 26), 10))

    due = [c.due_at for c in await planned(world, appointment_id)]
    assert due == [
        datetime(2027, 3, 27, 10, tzinfo=UTC),  # 10:00 GMT
        datetime(2027, 3, 29, 10, tzinfo=UTC),  # 72 h later: 11:00 BST
        london(date(2027, 4, 2), 10),  # 10:00 BST = 09:00 UTC
        london(date(2027, 4, 16), 10),
    ]
    assert due[2] == datetime(2027, 4, 2, 9, tzinfo=UTC)
    asked = await rows(world, appointment_id)
    # SMS (care SMS consent), one row per check-in, due with it; keyed per check-in + channel.
    assert [(r["channel"], r["due_at"]) for r in asked] == [("sms", d) for d in due]
    ids = [c.id for c in await planned(world, appointment_id)]
    assert [r["dedupe_key"] for r in asked] == [f"check_in:{i}:sms" for i in ids]


async def test_a_check_in_that_would_fall_in_quiet_hours_waits_for_eight_o_clock(
    world: World,
) -> None:
    """Completed 19:30 GMT: 72 h later is 20:30 BST (after the 20:00 end of the window), so it
    is asked at 08:00 BST the next morning; the others stay at 19:30 local."""
    appointment_id = await complete_session(world, london(date(2027, 3, 26), 19, 30))
    due = [c.due_at.astimezone(LONDON) for c in await planned(world, appointment_id)]
    assert [(d.date(), d.time()) for d in due] == [
        (date(2027, 3, 27), time(19, 30)),
        (date(2027, 3, 30), time(8, 0)),
        (date(2027, 4, 2), time(19, 30)),
        (date(2027, 4, 16), time(19, 30)),
    ]


async def test_completing_a_consultation_plans_no_check_ins(world: World) -> None:
    at = london(date(2027, 3, 26), 10)
    world.clock.advance(at - world.clock.now())
    appointment_id = await factories.appointment(
        world.pool,
        clinic_id=world.clinic_id,
        practitioner_id=world.practitioner_id,
        treatment_id=world.treatment_id,  # the consultation
        patient_id=world.patient_id,
        starts_at=at - timedelta(minutes=30),
        now=at,
        status="checked_in",
    )

    async def work(conn: Any) -> None:
        await actions.act(
            conn,
            appointment_id,
            state=actions.COMPLETE,
            expected_version=1,
            change=Change(Actor("staff", None, "Dr Hart"), at),
        )

    await in_transaction(world.pool, work)
    assert await planned(world, appointment_id) == []


# -- SMS answers ----------------------------------------------------------------------------------


async def asked_first_by_sms(world: World, notifier: Notifier, twilio: StandIn) -> CheckIn:
    appointment_id = await complete_session(world, london(date(2027, 3, 26), 10))
    first = (await planned(world, appointment_id))[0]
    await move_to(world, notifier, first.due_at)
    (row, *_) = await rows(world, appointment_id)
    await sent_row(world, row["id"])
    return first


@pytest.mark.parametrize(
    ("reply", "tier", "answer_says"),
    [
        ("1", "fine", "thank you for letting us know"),
        (" 2 ", "routine", "The clinic will contact you on the next working day"),
        ("3.", "urgent", "A clinician will call you back, within an hour in clinic hours"),
        ("I can't breathe properly", "emergency", "call 999 now"),
    ],
)
async def test_each_sms_answer_gets_its_tier_and_the_tiers_answer(
    world: World,
    notifier: Notifier,
    phone: Phone,
    twilio: StandIn,
    reply: str,
    tier: str,
    answer_says: str,
) -> None:
    first = await asked_first_by_sms(world, notifier, twilio)
    (question,) = check_in_messages(twilio.twilio.sent_to(MOBILE))
    assert "How is your scalp? 1 fine or mild tenderness" in question.body
    assert "Reply 1, 2 or 3." in question.body
    assert "Trouble breathing or swelling of lips, tongue or throat: call 999 now" in question.body
    assert "mesotherapy" not in question.body.lower()

    answer = await phone.send(reply)

    assert answer is not None and answer_says in answer
    recorded = await check_ins.get(world.pool, first.id)
    assert recorded is not None
    assert recorded.status == "answered" and recorded.tier == tier
    assert recorded.answered_via == "sms" and recorded.answer_text == reply
    handled = await world.pool.fetchrow("SELECT handled_as, answered_id FROM inbound_message")
    assert handled["handled_as"] == "check_in_answered"
    inbox = await world.pool.fetch("SELECT urgent, danger_words FROM inbox_item")
    if tier == "emergency":
        # Words: staff read them, urgent; the answer went back at once in the webhook reply.
        assert [(r["urgent"], list(r["danger_words"])) for r in inbox] == [(True, ["breathing"])]
    else:
        assert inbox == []  # a number needs no reading
    # Above fine, an adverse event opens on the session; urgent and emergency alert a
    # clinician at once (the emergency the on-call clinician, by SMS and email).
    events = await world.pool.fetch(
        "SELECT id, tier, appointment_id, check_in_id, symptoms FROM adverse_event"
    )
    alerts = await world.pool.fetch("SELECT tier, adverse_event_id, id FROM staff_alert")
    if tier == "fine":
        assert events == [] and alerts == []
    else:
        (event,) = events
        assert (event["tier"], event["appointment_id"], event["check_in_id"]) == (
            tier,
            first.appointment_id,
            first.id,
        )
        if tier == "routine":
            assert alerts == []
        else:
            assert [(a["tier"], a["adverse_event_id"]) for a in alerts] == [(tier, event["id"])]
            channels = await world.pool.fetch(
                "SELECT n.channel, n.urgent FROM staff_alert_notification s"
                " JOIN notification n ON n.id = s.notification_id WHERE s.alert_id = $1",
                alerts[0]["id"],
            )
            assert sorted((c["channel"], c["urgent"]) for c in channels) == [
                ("email", True),
                ("sms", True),
            ]
    # Answered: the follow-up sweep neither nudges nor calls about the check-in; a routine
    # answer is on the call list for the next business day instead.
    world.clock.advance(timedelta(days=3))
    await follow_up(world.pool, world.clock)
    reasons = [reason for _, reason in await open_calls(world)]
    assert reasons == (["adverse_event_routine"] if tier == "routine" else [])


async def test_at_72_hours_a_worsening_swelling_is_urgent(
    world: World, notifier: Notifier, phone: Phone
) -> None:
    """The seed's mapping: answer 2 is routine at 24 h (expected swelling) but urgent at 72 h
    ("worsening after 72 h" is an urgent trigger in the clinical defaults)."""
    appointment_id = await complete_session(world, london(date(2027, 3, 26), 10))
    second = (await planned(world, appointment_id))[1]
    await move_to(world, notifier, second.due_at)
    for row in (await rows(world, appointment_id))[:2]:
        await world.settled(row["id"], "sent", "delivered")
    # The 24 h one went unanswered; a reply answers the latest question, the 72 h one.
    answer = await phone.send("2")
    assert answer is not None and "A clinician will call you back" in answer
    recorded = await check_ins.get(world.pool, second.id)
    assert recorded is not None and recorded.tier == "urgent"


async def test_free_text_without_danger_words_is_routine_and_read_by_staff(
    world: World, notifier: Notifier, phone: Phone, twilio: StandIn
) -> None:
    first = await asked_first_by_sms(world, notifier, twilio)
    answer = await phone.send("a bit itchy but ok")
    assert answer is not None and "next working day" in answer
    recorded = await check_ins.get(world.pool, first.id)
    assert recorded is not None and recorded.tier == "routine"
    inbox = await world.pool.fetch("SELECT reason, urgent FROM inbox_item")
    assert [(r["reason"], r["urgent"]) for r in inbox] == [("free_text", False)]


async def test_a_number_shared_by_two_patients_with_check_ins_goes_to_staff(
    world: World, notifier: Notifier, phone: Phone
) -> None:
    """A parent's mobile on two patients' records, both asked: whose answer "3" is cannot be
    told, so a person reads it (nothing is recorded on either check-in)."""
    sibling = await world.new_patient(first_name="Sam")  # same mobile
    at = london(date(2027, 3, 26), 10)
    first_session = await complete_session(world, at)
    second_session = await complete_session(world, at, patient_id=sibling)
    due = (await planned(world, first_session))[0].due_at
    await move_to(world, notifier, due)
    for session in (first_session, second_session):
        await world.settled((await rows(world, session))[0]["id"], "sent", "delivered")

    await phone.send("3")

    for session in (first_session, second_session):
        assert (await planned(world, session))[0].answered_at is None
    inbox = await world.pool.fetch("SELECT reason FROM inbox_item")
    assert [r["reason"] for r in inbox] == ["several_patients"]


# -- no answer ------------------------------------------------------------------------------------


async def test_no_answer_gets_one_nudge_then_a_call_task(
    world: World, notifier: Notifier, twilio: StandIn
) -> None:
    first = await asked_first_by_sms(world, notifier, twilio)
    assert await follow_up(world.pool, world.clock) >= 1
    current = await check_ins.get(world.pool, first.id)
    assert current is not None and current.status == "sent"

    await move_to(world, notifier, first.due_at + timedelta(hours=24))
    await follow_up(world.pool, world.clock)
    current = await check_ins.get(world.pool, first.id)
    assert current is not None and current.status == "nudged"
    nudge = [r for r in await rows(world, first.appointment_id) if r["context"]["nudge"]]
    assert len(nudge) == 1
    await world.settled(nudge[0]["id"], "sent", "delivered")
    texts = [m.body for m in check_in_messages(twilio.twilio.sent_to(MOBILE))]
    assert any(t.startswith("Reminder:") for t in texts)

    # Another run the same hour nudges nothing more.
    await follow_up(world.pool, world.clock)
    assert len([r for r in await rows(world, first.appointment_id) if r["context"]["nudge"]]) == 1

    await move_to(world, notifier, first.due_at + timedelta(hours=48))
    await follow_up(world.pool, world.clock)
    current = await check_ins.get(world.pool, first.id)
    assert current is not None and current.status == "called"
    assert current.call_task_id is not None
    assert (first.appointment_id, "check_in_unanswered") in await open_calls(world)


async def test_a_patient_with_neither_channel_is_phoned_at_the_due_time(world: World) -> None:
    patient_id = await world.new_patient(mobile="+447700900555", email=None, consent=False)
    appointment_id = await complete_session(world, london(date(2027, 3, 26), 10), patient_id)
    planned_ = await planned(world, appointment_id)
    assert [c.channel for c in planned_] == ["call"] * 4
    assert await rows(world, appointment_id) == []

    world.clock.advance(planned_[0].due_at - world.clock.now() - timedelta(minutes=1))
    await follow_up(world.pool, world.clock)
    assert await open_calls(world) == []  # not before it is due

    world.clock.advance(timedelta(minutes=1))
    await follow_up(world.pool, world.clock)
    assert await open_calls(world) == [(appointment_id, "check_in_no_channel")]
    current = await check_ins.get(world.pool, planned_[0].id)
    assert current is not None and current.status == "called" and current.call_task_id


# -- email ----------------------------------------------------------------------------------------


def check_in_messages(sent: Iterable[Any]) -> list[Any]:
    """The messages of a completed session other than its aftercare (which links its own
    page): the check-ins and what answers them."""
    return [m for m in sent if "/aftercare/" not in m.body]


def links_in(mail: Any) -> list[str]:
    return re.findall(r"https://clinic\.example\.test/c/[A-Za-z0-9_-]+", mail.body)


async def test_a_patient_who_opts_out_after_completion_gets_every_check_in_by_email(
    world: World, notifier: Notifier, phone: Phone, smtp: SmtpSink, twilio: StandIn
) -> None:
    appointment_id = await complete_session(world, london(date(2027, 3, 26), 10))
    before = await planned(world, appointment_id)

    await phone.send("STOP")

    by_channel = await rows(world, appointment_id)
    assert [r["status"] for r in by_channel if r["channel"] == "sms"] == ["cancelled"] * 4
    email = [r for r in by_channel if r["channel"] == "email"]
    assert [r["due_at"] for r in email] == [c.due_at for c in before]
    assert [c.channel for c in await planned(world, appointment_id)] == ["email"] * 4

    for check_in, row in zip(before, email, strict=True):
        await move_to(world, notifier, check_in.due_at)
        await world.settled(row["id"], "sent", "delivered")
    mails = check_in_messages(m for m in smtp.recorder.items("email") if m.to == EMAIL)
    assert len(mails) == 4
    assert all(len(links_in(m)) == 3 for m in mails)
    assert twilio.twilio.sent_to(MOBILE) == []


async def test_an_emailed_answer_link_records_only_when_the_button_is_pressed(
    world: World,
    notifier: Notifier,
    smtp: SmtpSink,
    start_booking: Any,
) -> None:
    patient_id = await world.new_patient(mobile=None, email="robin@example.com")
    appointment_id = await complete_session(world, london(date(2027, 3, 26), 10), patient_id)
    first = (await planned(world, appointment_id))[0]
    assert first.channel == "email"
    await move_to(world, notifier, first.due_at)
    await world.settled((await rows(world, appointment_id))[0]["id"], "sent", "delivered")
    (mail,) = check_in_messages(
        m for m in smtp.recorder.items("email") if m.to == "robin@example.com"
    )
    assert "How is your scalp?" in mail.body
    three = links_in(mail)[2]

    base = await start_booking()
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[base])
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        url = three.replace("https://clinic.example.test", base)
        # A mail scanner fetching the link records nothing.
        async with http.get(url) as page:
            assert page.status == 200
            text = await page.text()
        assert "fever, pus, spreading redness or severe pain" in text
        assert "Send this answer" in text
        unanswered = await check_ins.get(world.pool, first.id)
        assert unanswered is not None and unanswered.answered_at is None

        # A POST without the page's CSRF token is refused.
        async with aiohttp.ClientSession() as stranger:
            async with stranger.post(url, data={"csrf_token": "x"}) as forged:
                assert forged.status == 403
        token = re.search(r'name="csrf_token" value="([^"]+)"', text)
        assert token is not None
        async with http.post(url, data={"csrf_token": token.group(1)}) as done:
            assert done.status == 200
            result = await done.text()
        # Sent twice (a double click): thanked the same, recorded once.
        async with http.post(url, data={"csrf_token": token.group(1)}) as again:
            assert again.status == 200
            repeated = await again.text()
    assert "A clinician will call you back" in result
    for page_text in (result, repeated):
        assert "Thank you, your answer is with the clinic" in page_text
    answered = await check_ins.get(world.pool, first.id)
    assert answered is not None
    assert (answered.tier, answered.answered_via, answered.answer_digit) == ("urgent", "email", 3)
    # A forged link (another check-in's id, or garbled) opens nothing.
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/c/AAAAAAAAAAAAAAAAAAAAAAAAAAAA") as bad:
            assert bad.status == 404


@pytest.fixture
async def start_booking(settings: Settings, world: World, db_url: str) -> AsyncIterator[Any]:
    from services.booking.app import create_app
    from tests.conftest import serve_app

    runners = []

    async def start() -> str:
        runner, base = await serve_app(create_app(settings, world.clock, db_url))
        runners.append(runner)
        return base

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_the_email_check_in_names_no_treatment_in_its_subject(
    world: World, notifier: Notifier, smtp: SmtpSink
) -> None:
    patient_id = await world.new_patient(mobile=None, email="kim@example.com")
    appointment_id = await complete_session(world, london(date(2027, 3, 26), 10), patient_id)
    first = (await planned(world, appointment_id))[0]
    await move_to(world, notifier, first.due_at)
    await world.settled((await rows(world, appointment_id))[0]["id"], "sent", "delivered")
    (mail,) = check_in_messages(
        m for m in smtp.recorder.items("email") if m.to == "kim@example.com"
    )
    assert mail.subject is not None and "mesotherapy" not in mail.subject.lower()


async def test_an_sms_check_in_stopped_at_send_time_is_asked_again_by_email(
    world: World, notifier: Notifier, smtp: SmtpSink
) -> None:
    """The safety net when nothing re-planned: care SMS consent withdrawn by a path that does
    not move the messages; the notifier suppresses the text when it is due, and the follow-up
    sweep asks again by email the same minute."""
    appointment_id = await complete_session(world, london(date(2027, 3, 26), 10))
    first = (await planned(world, appointment_id))[0]
    await factories.consent(
        world.pool, world.patient_id, {"care_sms": False}, now=world.clock.now()
    )

    await move_to(world, notifier, first.due_at)
    sms_row = (await rows(world, appointment_id))[0]
    await world.settled(sms_row["id"], "suppressed")
    await follow_up(world.pool, world.clock)

    email = [r for r in await rows(world, appointment_id) if r["channel"] == "email"]
    assert len(email) == 1 and email[0]["context"]["check_in_id"] == first.id
    await world.settled(email[0]["id"], "sent", "delivered")
    assert any("How is your scalp?" in m.body for m in smtp.recorder.items("email"))
    current = await check_ins.get(world.pool, first.id)
    assert current is not None and current.channel == "email"
