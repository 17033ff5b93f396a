"""Two-way SMS: what a patient's reply does, and the answer it gets (../shared/contract.md's
keywords; issue 12).

A reply is read in the context of the latest open question to the patients behind the number
(shared/store/notifications/questions.py): "C" confirms the sessions the confirmation request
asked about, "R" puts them on the staff call list and answers with the private link, "X"
cancels when the clinic's notice allows (else: call us, and the call list). Opt-out words
record the opt-out and cancel queued SMS (email and staff follow-up go on; no appointment is
cancelled; no answer: Twilio sends its own); START / UNSTOP (and YES after an opt-out) opt back
in with the opt-in confirmation; HELP answers with the clinic's name, phone and STOP. A number
or words while an aftercare check-in asked by SMS waits for its answer are that answer
(shared.domain.check_ins.record_answer: its tier picks the answer; words also go to the inbox).
Anything else, every reply from an unknown number, and replies that cannot be told apart (several
patients on one number with open questions) go to the staff inbox, acknowledged at most once a
day; words that signal danger make the item urgent and get the emergency answer at once.

Invariants:
* Nothing a patient sent is lost: the message is stored (its own commit) before it is read,
  and stored once whatever Twilio redelivers (`message_sid`).
* It acts once: what was made of a message and the answer given are written in the same
  transaction as the action itself; a redelivered webhook finds the message handled and gets
  the same answer.
* One number's replies are handled one at a time and in the order they arrived: the handler
  takes the number's advisory lock and handles every earlier unhandled message of that number
  before its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import phonenumbers

from services.notifier.metrics import NotifierMetrics
from services.notifier.reply_answers import AnswerContext, compose, private_link, when_text
from services.notifier.reply_words import Reading, read
from shared import outbox_plan
from shared.clock import Clock
from shared.config import Settings
from shared.db.transactions import in_transaction
from shared.domain import adverse_events, alerts, cancellations
from shared.domain import check_ins as check_in_domain
from shared.domain import proposals as proposal_domain
from shared.domain.appointment_changes import Change, clinic_of, transition_audited
from shared.domain.danger_words import danger_signs
from shared.domain.errors import Conflict
from shared.scheduling.loader import ClinicInfo
from shared.store import (
    appointments,
    call_tasks,
    check_ins,
    clinics,
    consents,
    inbound_messages,
    inbox,
    notifications,
    patients,
)
from shared.store.appointments import Appointment
from shared.store.audit import Actor
from shared.store.inbound_messages import Handled, Handling
from shared.store.inbox import InboxReason
from shared.store.notifications.questions import OpenQuestion
from shared.store.patients import Patient

log = logging.getLogger("regimen.notifier.replies")

# Earlier unhandled messages of the same number handled first are those of the last minutes:
# an older one left unhandled by a failure must not hold every later reply behind it.
IN_ORDER_WINDOW = timedelta(minutes=10)
ACKNOWLEDGE_EVERY = timedelta(days=1)
# "Reply 1 or 2": a digit this long after the question answers it.
WHICH_ANSWERABLE_FOR = timedelta(hours=1)
# At most this many patients are listed in "which one?" (two SMS segments); more go to staff.
MAX_WHICH = 4
# What consent rows say of a keyword reply (patient_consent.source / wording_version).
CONSENT_SOURCE = "sms reply"
CONSENT_WORDING = "sms-keyword"
OPT_OUT_REASON = "the patient opted out of SMS (replied {word})"
CANCEL_REASON = "cancelled by the patient (replied X by SMS)"
# Where a stored answer had the patient's private link (minted afresh whenever it is sent).
LINK_PLACEHOLDER = "{private-link}"


@dataclass(frozen=True)
class InboundSms:
    message_sid: str
    from_number: str
    to_number: str
    body: str
    opt_out_type: str | None


def normalised_number(raw: str) -> str:
    """The sender as E.164 (how patients' mobiles are stored); as given if it is no number."""
    try:
        parsed = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return raw
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


class ReplyHandler:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        clock: Clock,
        metrics: NotifierMetrics | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.clock = clock
        self.metrics = metrics

    async def handle(self, sms: InboundSms) -> tuple[int, str | None]:
        """Store, act on and answer one inbound SMS: the message's id and the answer (None for
        no answer)."""
        received = self.clock.now()
        message_id = await inbound_messages.insert(
            self.pool,
            message_sid=sms.message_sid,
            from_number=sms.from_number,
            to_number=sms.to_number,
            body=sms.body,
            opt_out_type=sms.opt_out_type,
            received_at=received,
        )
        if message_id is None:  # delivered before: stored then, handled then or now
            message_id = await inbound_messages.id_of(self.pool, sms.message_sid)
            assert message_id is not None

        done: list[str] = []

        async def work(conn: asyncpg.Connection) -> str | None:
            done.clear()  # a retried transaction starts again
            return await self._handle_in_order(conn, message_id, sms.from_number, done)

        answer = await in_transaction(self.pool, work)
        if self.metrics is not None:
            for handled_as in done:
                self.metrics.replies.labels(handled_as).inc()
        return message_id, answer

    async def _handle_in_order(
        self, conn: asyncpg.Connection, message_id: int, from_number: str, done: list[str]
    ) -> str | None:
        now = self.clock.now()
        await inbound_messages.lock_number(conn, from_number)
        pending = await inbound_messages.lock_unhandled_from(
            conn, from_number, up_to_id=message_id, since=now - IN_ORDER_WINDOW
        )
        for message in pending:
            handled = await self._act(conn, message, now)
            await inbound_messages.record_handling(conn, message.id, handled, now=now)
            done.append(handled.handled_as)
            log.info(
                "sms reply handled",
                extra={"inbound_id": message.id, "handled_as": handled.handled_as},
            )
        mine = await inbound_messages.get_handling(conn, message_id)
        assert mine is not None
        return await self._with_link(conn, mine, now)

    async def _with_link(
        self, conn: asyncpg.Connection, handled: Handling, now: datetime
    ) -> str | None:
        """The stored answer with the patient's private link minted now: the link is a bearer
        credential, so the database keeps a placeholder, never the link itself."""
        if handled.answer is None or LINK_PLACEHOLDER not in handled.answer:
            return handled.answer
        patient = (
            None if handled.patient_id is None else await patients.get(conn, handled.patient_id)
        )
        link = ""
        if patient is not None and patient.erased_at is None:
            clinic = await clinic_of(conn, patient.clinic_id)
            link = private_link(AnswerContext(clinic, "", patient, self.settings, now))
        return handled.answer.replace(LINK_PLACEHOLDER, link)

    # -- reading ---------------------------------------------------------------------------------

    async def _act(self, conn: asyncpg.Connection, message: Handling, now: datetime) -> Handled:
        number = normalised_number(message.from_number)
        senders = await patients.with_mobile(conn, number)
        reading = read(
            message.body,
            opt_out_type=message.opt_out_type,
            opted_out=any(p.sms_opted_out_at is not None for p in senders),
        )
        turn = _Turn(self, conn, message, number, senders, reading, now)
        if reading.intent == "opt_out":
            return await turn.opt_out()
        if reading.intent == "opt_in":
            return await turn.opt_in()
        if reading.intent == "help":
            return await turn.help()
        if reading.intent in ("confirm", "reschedule", "cancel_session"):
            return await turn.answer_question()
        if reading.intent == "digit" and await turn.which_pending():
            return await turn.answer_which()
        # A number or words while a check-in waits for its answer: that is the answer.
        answered = await turn.answer_check_in()
        if answered is not None:
            return answered
        if reading.intent == "digit":
            return await turn.answer_which()
        return await turn.to_inbox("free_text" if senders else "unknown_number")


class _Turn:
    """One message being acted on, inside the handler's transaction."""

    def __init__(
        self,
        handler: ReplyHandler,
        conn: asyncpg.Connection,
        message: Handling,
        number: str,
        senders: list[Patient],
        reading: Reading,
        now: datetime,
    ) -> None:
        self.handler = handler
        self.conn = conn
        self.message = message
        self.number = number
        self.senders = senders
        self.reading = reading
        self.now = now

    # -- what the message is about ---------------------------------------------------------------

    async def _clinic(self, patient: Patient | None = None) -> ClinicInfo | None:
        """The clinic that answers: the patient's, else the senders' first, else the first
        clinic of this installation (one sender number usually serves one clinic)."""
        if patient is None and self.senders:
            patient = self.senders[0]
        if patient is not None:
            return await clinic_of(self.conn, patient.clinic_id)
        first = await clinics.first(self.conn)
        return None if first is None else await clinic_of(self.conn, first.id)

    def _answers(self, clinic: ClinicInfo, patient: Patient | None) -> AnswerContext:
        return AnswerContext(clinic, self.number, patient, self.handler.settings, self.now)

    def _shared_clinic_id(self) -> int | None:
        ids = {p.clinic_id for p in self.senders}
        return ids.pop() if len(ids) == 1 else None

    def _handled(
        self,
        handled_as: inbound_messages.HandledAs,
        answer: str | None,
        *,
        patient: Patient | None = None,
        clinic_id: int | None = None,
        appointment_ids: Sequence[int] = (),
        question: OpenQuestion | None = None,
        acknowledged: bool = False,
    ) -> Handled:
        if patient is None and len(self.senders) == 1:
            patient = self.senders[0]
        return Handled(
            handled_as=handled_as,
            clinic_id=clinic_id
            if clinic_id is not None
            else (patient.clinic_id if patient is not None else self._shared_clinic_id()),
            patient_id=None if patient is None else patient.id,
            appointment_ids=list(appointment_ids),
            answered_id=None if question is None else question.notification_id,
            answer=answer,
            acknowledged=acknowledged,
        )

    # -- opt-out, opt-in, help -------------------------------------------------------------------

    async def opt_out(self) -> Handled:
        """Every patient on the number: opted out at once, SMS consent withdrawn (care and
        marketing), queued SMS cancelled and the reminders re-planned by email where the patient
        allows it. Emails and staff follow-up go on; no appointment is cancelled. No answer:
        Twilio confirms opt-outs itself."""
        word = self.reading.keyword or (self.message.opt_out_type or "STOP")
        for patient in self.senders:
            # Locked first, as every consent change does (outbox_plan.on_consents_changed).
            await patients.lock(self.conn, patient.id)
            await patients.record_sms_opt_out(self.conn, patient.id, now=self.now)
            for kind in ("care_sms", "marketing_sms"):
                await consents.insert(
                    self.conn,
                    patient.id,
                    kind=kind,
                    granted=False,
                    source=f"{CONSENT_SOURCE} {word}",
                    wording_version=CONSENT_WORDING,
                    now=self.now,
                )
            await notifications.outbox.cancel_pending_for_patient(
                self.conn,
                patient.id,
                reason=OPT_OUT_REASON.format(word=word),
                now=self.now,
                channel="sms",
            )
            # The reminders move to email where the patient allows it.
            await outbox_plan.on_consents_changed(self.conn, patient.id, now=self.now)
        return self._handled("opted_out", None)

    async def opt_in(self) -> Handled:
        """Every patient on the number opted back in to care SMS, and the opt-in confirmation
        (clinic name, frequency, rates, HELP and STOP) sent back. An unknown number is not
        answered: it gets no texts from us to opt in to."""
        if not self.senders:
            return self._handled("opted_in", None)
        word = self.reading.keyword or "START"
        for patient in self.senders:
            await patients.lock(self.conn, patient.id)
            await patients.record_sms_opt_in(self.conn, patient.id, now=self.now)
            await consents.insert(
                self.conn,
                patient.id,
                kind="care_sms",
                granted=True,
                source=f"{CONSENT_SOURCE} {word}",
                wording_version=CONSENT_WORDING,
                now=self.now,
            )
            # The reminders come back by SMS.
            await outbox_plan.on_consents_changed(self.conn, patient.id, now=self.now)
        clinic = await self._clinic()
        assert clinic is not None
        answer = compose("opt_in_confirmation", self._answers(clinic, self.senders[0]))
        return self._handled("opted_in", answer)

    async def help(self) -> Handled:
        clinic = await self._clinic()
        if clinic is None:
            return self._handled("help", None)
        patient = self.senders[0] if self.senders else None
        return self._handled("help", compose("answer_help", self._answers(clinic, patient)))

    # -- answers to a question -------------------------------------------------------------------

    async def answer_question(self) -> Handled:
        if not self.senders:
            return await self.to_inbox("unknown_number")
        open_questions = await notifications.questions.latest_open(
            self.conn, [p.id for p in self.senders], now=self.now
        )
        if not open_questions:
            return await self.to_inbox("nothing_asked")
        if len(open_questions) > MAX_WHICH:
            return await self.to_inbox("several_patients")  # too many to list in a text
        if len(open_questions) > 1:
            # A parent's number, both children asked: which child's appointment is meant?
            return await self._ask_which(list(open_questions.values()))
        (question,) = open_questions.values()
        return await self._answer(question)

    async def which_pending(self) -> bool:
        """This number was asked "which patient's appointment?" in the last hour (a digit then
        answers that, before any check-in)."""
        asked = await inbound_messages.latest_asked_which(
            self.conn, self.message.from_number, since=self.now - WHICH_ANSWERABLE_FOR
        )
        return asked is not None

    async def answer_check_in(self) -> Handled | None:
        """The reply as the answer to the latest check-in asked of the patient by SMS (the
        question or its nudge, in the last ANSWERABLE_FOR); None when none waits. A number
        shared by several patients with check-ins waiting cannot say whose answer it is: staff
        read it (the inbox, urgent with danger words, which also get the emergency answer).
        Words go to the inbox as well; the answer's tier picks the patient's answer."""
        if not self.senders:
            return None
        waiting = await check_ins.latest_asked_by_sms(
            self.conn,
            [p.id for p in self.senders],
            since=self.now - notifications.questions.ANSWERABLE_FOR,
        )
        if not waiting:
            return None
        if len(waiting) > 1:
            return await self.to_inbox("several_patients")
        (asked,) = waiting.values()
        patient = next(p for p in self.senders if p.id == asked.check_in.patient_id)
        change = Change(Actor("patient", patient.id, "SMS reply"), self.now)
        triage = await check_in_domain.record_answer(
            self.conn, asked.check_in, self.message.body, "sms", change
        )
        if triage is None:
            return None  # answered a moment ago (by the emailed link, by staff)
        if triage.free_text or triage.signs:
            await inbox.insert(
                self.conn,
                clinic_id=patient.clinic_id,
                patient_id=patient.id,
                inbound_message_id=self.message.id,
                reason="free_text",
                danger_words=triage.signs,
                now=self.now,
            )
        if triage.tier == "emergency":
            log.warning("emergency check-in answer", extra={"inbound_id": self.message.id})
        clinic = await clinic_of(self.conn, patient.clinic_id)
        answer = compose(
            check_in_domain.answer_template(triage.tier), self._answers(clinic, patient)
        )
        return Handled(
            handled_as="check_in_answered",
            clinic_id=patient.clinic_id,
            patient_id=patient.id,
            appointment_ids=[asked.check_in.appointment_id],
            answered_id=asked.notification_id,
            answer=answer,
            acknowledged=False,
        )

    async def answer_which(self) -> Handled:
        """A digit: the answer to "which patient's appointment?", asked of this number in the
        last hour, applied as the reply that question was about. Otherwise a person reads it
        (a check-in answer, later, is read before this)."""
        asked = await inbound_messages.latest_asked_which(
            self.conn, self.message.from_number, since=self.now - WHICH_ANSWERABLE_FOR
        )
        digit = self.reading.digit or 0
        if asked is None or not 1 <= digit <= len(asked.appointment_ids):
            return await self.to_inbox("free_text" if self.senders else "unknown_number")
        chosen = await appointments.get(self.conn, asked.appointment_ids[digit - 1])
        if chosen is None or chosen.patient_id is None:
            return await self.to_inbox("nothing_asked")
        open_questions = await notifications.questions.latest_open(
            self.conn, [chosen.patient_id], now=self.now
        )
        if chosen.patient_id not in open_questions:
            return await self.to_inbox("nothing_asked")
        # Act as the first reply would have, had the number been one patient's.
        self.reading = read(asked.body, opt_out_type=None, opted_out=False)
        return await self._answer(open_questions[chosen.patient_id])

    async def _ask_which(self, questions: list[OpenQuestion]) -> Handled:
        by_id = {p.id: p for p in self.senders}
        options: list[tuple[Patient, Appointment]] = []
        for question in questions:
            first = await appointments.get(self.conn, question.appointment_ids[0])
            if first is not None:
                options.append((by_id[question.patient_id], first))
        options.sort(key=lambda o: (o[0].first_name, o[1].starts_at, o[0].id))
        clinic = await clinic_of(self.conn, options[0][0].clinic_id)
        answers = self._answers(clinic, None)
        numbered = ", ".join(
            f"{n} {patient.first_name} ({when_text([session], answers)})"
            for n, (patient, session) in enumerate(options, start=1)
        )
        # Without the times when they do not fit: first names alone still tell children apart.
        names = ", ".join(f"{n} {p.first_name}" for n, (p, _) in enumerate(options, start=1))
        digits = [str(n) for n in range(1, len(options) + 1)]
        answer = compose(
            "answer_which",
            answers,
            options=numbered,
            names=names,
            numbers=", ".join(digits[:-1]) + " or " + digits[-1],
        )
        return self._handled(
            "asked_which",
            answer,
            clinic_id=clinic.id,
            appointment_ids=[session.id for _, session in options],
        )

    async def _answer(self, question: OpenQuestion) -> Handled:
        """The reply (C, R or X) applied to one patient's open question."""
        if question.kind == "proposal":
            return await self._answer_proposal(question)
        patient = next(p for p in self.senders if p.id == question.patient_id)
        clinic = await clinic_of(self.conn, patient.clinic_id)
        sessions = [
            a
            for a in [await appointments.lock(self.conn, i) for i in question.appointment_ids]
            if a is not None and a.status in ("booked", "confirmed") and a.starts_at > self.now
        ]
        if not sessions:  # changed since the question was read: nothing left to answer
            return await self.to_inbox("nothing_asked")
        answers = self._answers(clinic, patient)
        change = Change(Actor("patient", patient.id, "SMS reply"), self.now)
        if self.reading.intent == "confirm":
            return await self._confirm(patient, question, sessions, answers, change)
        if self.reading.intent == "reschedule":
            return await self._reschedule(patient, question, sessions, answers)
        return await self._cancel(patient, question, sessions, answers, change)

    async def _answer_proposal(self, question: OpenQuestion) -> Handled:
        """A proposed next session (shared/domain/proposals.py): C books it; R or X lets it go
        and puts the patient on the call list. A proposal settled meanwhile (released by the
        sweep a moment ago) leaves the reply to a person."""
        patient = next(p for p in self.senders if p.id == question.patient_id)
        proposal = await proposal_domain.lock_open(self.conn, question.appointment_ids[0])
        if proposal is None:
            return await self.to_inbox("nothing_asked")
        answers = self._answers(await clinic_of(self.conn, patient.clinic_id), patient)
        change = Change(Actor("patient", patient.id, "SMS reply"), self.now)
        handled_as: inbound_messages.HandledAs
        if self.reading.intent == "confirm":
            settled = await proposal_domain.accept(
                self.conn, proposal, change, inbound_message_id=self.message.id
            )
            template, handled_as = "answer_proposal_booked", "confirmed"
        else:
            settled = await proposal_domain.release(
                self.conn, proposal, change, declined=True, inbound_message_id=self.message.id
            )
            template, handled_as = "answer_proposal_released", "reschedule_requested"
        if settled is None:
            return await self.to_inbox("nothing_asked")
        # Released, the course waits for its next session: the private link's page books it
        # (the booked answer has no link).
        when = when_text([settled.appointment], answers)
        answer = compose(template, answers, when=when, link=LINK_PLACEHOLDER)
        return self._handled(
            handled_as,
            answer,
            patient=patient,
            appointment_ids=[settled.appointment.id],
            question=question,
        )

    async def _confirm(
        self,
        patient: Patient,
        question: OpenQuestion,
        sessions: list[Appointment],
        answers: AnswerContext,
        change: Change,
    ) -> Handled:
        confirmed = []
        for session in sessions:
            if session.status != "booked":
                continue
            confirmed.append(
                await transition_audited(
                    self.conn,
                    session,
                    "confirmed",
                    "confirm",
                    change,
                    details={"via": "sms", "inbound_message_id": self.message.id},
                    audit_details={"via": "sms", "to_status": "confirmed"},
                )
            )
        named = confirmed or sessions
        template = "answer_confirmed" if confirmed else "answer_already_confirmed"
        answer = compose(template, answers, when=when_text(named, answers), several=len(named) > 1)
        return self._handled(
            "confirmed" if confirmed else "already_confirmed",
            answer,
            patient=patient,
            appointment_ids=[a.id for a in named],
            question=question,
        )

    async def _reschedule(
        self,
        patient: Patient,
        question: OpenQuestion,
        sessions: list[Appointment],
        answers: AnswerContext,
    ) -> Handled:
        await self._call(
            patient,
            sessions,
            "reschedule_requested",
            f"replied {self.reading.keyword} to the confirmation request",
        )
        answer = compose(
            "answer_reschedule",
            answers,
            when=when_text(sessions, answers),
            link=LINK_PLACEHOLDER,
        )
        return self._handled(
            "reschedule_requested",
            answer,
            patient=patient,
            appointment_ids=[a.id for a in sessions],
            question=question,
        )

    async def _cancel(
        self,
        patient: Patient,
        question: OpenQuestion,
        sessions: list[Appointment],
        answers: AnswerContext,
        change: Change,
    ) -> Handled:
        when = when_text(sessions, answers)
        link = LINK_PLACEHOLDER
        if len(sessions) > 1:
            # "X" cannot say which of several sessions: cancel none, and a person asks.
            await self._call(
                patient,
                sessions,
                "cancel_inside_notice",
                "replied X to a message about several sessions: which one to cancel?",
            )
            answer = compose("answer_cancel_which", answers, when=when, link=link)
            return self._handled(
                "cancel_refused",
                answer,
                patient=patient,
                appointment_ids=[a.id for a in sessions],
                question=question,
            )
        (session,) = sessions
        try:
            await cancellations.cancel(
                self.conn,
                session.id,
                reason=CANCEL_REASON,
                scope="this",
                override_reason=None,
                expected_version=None,
                change=change,
                notify_patient=False,
            )
        except Conflict as refusal:
            if refusal.code != "inside-cancellation-notice":
                raise
            notice_hours = int(answers.clinic.cancellation_notice.total_seconds() // 3600)
            await self._call(
                patient,
                sessions,
                "cancel_inside_notice",
                f"replied X inside the {notice_hours} h cancellation notice",
            )
            answer = compose("answer_cancel_refused", answers, when=when, notice_hours=notice_hours)
            return self._handled(
                "cancel_refused",
                answer,
                patient=patient,
                appointment_ids=[session.id],
                question=question,
            )
        answer = compose("answer_cancelled", answers, when=when, link=link)
        return self._handled(
            "cancelled", answer, patient=patient, appointment_ids=[session.id], question=question
        )

    async def _call(
        self,
        patient: Patient,
        sessions: Sequence[Appointment],
        reason: call_tasks.CallReason,
        detail: str,
    ) -> None:
        for session in sessions:
            await call_tasks.file(
                self.conn,
                clinic_id=session.clinic_id,
                patient_id=patient.id,
                appointment_id=session.id,
                reason=reason,
                detail=detail,
                inbound_message_id=self.message.id,
                now=self.now,
            )

    # -- the inbox -------------------------------------------------------------------------------

    async def _latest_session_id(self, patient: Patient) -> int | None:
        """The patient's latest completed session (what a reaction reported now follows)."""
        done = [
            a
            for a in await appointments.for_patient(self.conn, patient.id)
            if a.status == "completed"
        ]
        return max(done, key=lambda a: a.starts_at).id if done else None

    async def to_inbox(self, reason: InboxReason) -> Handled:
        """File the message for staff. Danger words make it urgent and get the emergency answer
        now; otherwise the number is acknowledged once a day."""
        patient = self.senders[0] if len(self.senders) == 1 else None
        language = patient.language if patient is not None else "en"
        signs = danger_signs(self.message.body, language)
        clinic_id = self._shared_clinic_id()
        item_id = await inbox.insert(
            self.conn,
            clinic_id=clinic_id,
            patient_id=None if patient is None else patient.id,
            inbound_message_id=self.message.id,
            reason=reason,
            danger_words=signs,
            now=self.now,
        )
        clinic = await self._clinic(patient)
        if clinic is None:  # no clinic set up yet: nobody to answer for
            return self._handled("emergency" if signs else "inbox", None)
        answers = self._answers(clinic, patient)
        if signs:
            # The urgent item alerts staff in this transaction (the priority lane, escalated
            # until someone acknowledges it). From a known patient it is an adverse event too,
            # on their latest completed session (report() raises the alert).
            if patient is not None:
                await adverse_events.report(
                    self.conn,
                    clinic_id=patient.clinic_id,
                    patient_id=patient.id,
                    appointment_id=await self._latest_session_id(patient),
                    tier=alerts.tier_of_signs(signs),
                    symptoms=self.message.body,
                    source="sms",
                    change=Change(Actor("patient", patient.id, "SMS reply"), self.now),
                    inbound_message_id=self.message.id,
                    inbox_item_id=item_id,
                )
            else:
                await alerts.raise_alert(
                    self.conn,
                    clinic_id=clinic.id,
                    tier=alerts.tier_of_signs(signs),
                    patient_id=None,
                    now=self.now,
                    inbox_item_id=item_id,
                    summary=f"SMS with danger signs ({', '.join(signs)}) from a number not on "
                    f"file, inbox item #{item_id}",
                )
            # What the patient wrote is health data: the log names the message, not its words.
            log.warning("urgent sms reply in the inbox", extra={"inbound_id": self.message.id})
            return self._handled("emergency", compose("answer_emergency", answers))
        if await inbound_messages.acknowledged_since(
            self.conn, self.message.from_number, self.now - ACKNOWLEDGE_EVERY
        ):
            return self._handled("inbox", None)
        return self._handled("inbox", compose("answer_acknowledged", answers), acknowledged=True)
