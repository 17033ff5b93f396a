-- Aftercare check-ins (issue 13): each treatment's plan of questions after a completed session,
-- and the check-ins planned from it, with what the patient answered and what became of them.

-- One step of a treatment's check-in plan. When: either `offset_hours` after the session was
-- completed (elapsed time: 24 h, 72 h), or `offset_days` local calendar days later at
-- `at_local_time` (null: the session's own local wall time), so "7 days later" stays at the
-- same local hour across a clock change. `answers`: the numbered answers, a JSON array of
-- {"digit": 1, "label": "...", "tier": "fine"|"routine"|"urgent"|"emergency"}.
CREATE TABLE check_in_plan_step (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    treatment_id       bigint  NOT NULL REFERENCES treatment (id) ON DELETE CASCADE,
    position           integer NOT NULL CHECK (position BETWEEN 1 AND 20),
    offset_hours       integer CHECK (offset_hours BETWEEN 1 AND 2160),
    offset_days        integer CHECK (offset_days BETWEEN 1 AND 365),
    at_local_time      time,
    question           text    NOT NULL CHECK (length(question) BETWEEN 1 AND 600),
    answers            jsonb   NOT NULL CHECK (jsonb_typeof(answers) = 'array'),
    -- the last step may be asked with the next session's pre-visit questions instead
    fold_into_next_visit boolean NOT NULL DEFAULT false,
    -- no answer this long after it was sent: one nudge; this long after the nudge: a call
    nudge_after_hours  integer NOT NULL DEFAULT 24 CHECK (nudge_after_hours BETWEEN 1 AND 336),
    call_after_hours   integer NOT NULL DEFAULT 24 CHECK (call_after_hours BETWEEN 1 AND 336),
    UNIQUE (treatment_id, position),
    CHECK ((offset_hours IS NULL) <> (offset_days IS NULL)),
    CHECK (offset_days IS NOT NULL OR at_local_time IS NULL)
);

-- One per completed session and plan step. The plan step's question and answers are copied in
-- (`question`, `answers`): a plan edited later does not change what the patient was asked.
-- channel: how it is asked now ('call': nobody may be written to, staff phone).
CREATE TABLE check_in (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clinic_id       bigint  NOT NULL REFERENCES clinic (id),
    patient_id      bigint  NOT NULL REFERENCES patient (id),
    appointment_id  bigint  NOT NULL REFERENCES appointment (id),
    step_id         bigint  REFERENCES check_in_plan_step (id) ON DELETE SET NULL,
    position        integer NOT NULL,
    question        text    NOT NULL,
    answers         jsonb   NOT NULL,
    nudge_after_hours integer NOT NULL,
    call_after_hours  integer NOT NULL,
    due_at          timestamptz NOT NULL,
    channel         text    NOT NULL CHECK (channel IN ('sms', 'email', 'call')),
    status          text    NOT NULL DEFAULT 'planned' CHECK (status IN (
                        'planned', 'sent', 'nudged', 'answered', 'called', 'cancelled')),
    sent_at         timestamptz,
    nudged_at       timestamptz,
    answer_text     text,
    answer_digit    integer,
    tier            text CHECK (tier IN ('fine', 'routine', 'urgent', 'emergency')),
    answered_at     timestamptz,
    answered_via    text CHECK (answered_via IN ('sms', 'email', 'staff')),
    call_task_id    bigint REFERENCES call_task (id),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    UNIQUE (appointment_id, position),
    CHECK ((answered_at IS NULL) = (tier IS NULL))
);
CREATE INDEX check_in_follow_up_idx ON check_in (due_at, id)
    WHERE status IN ('planned', 'sent', 'nudged');
CREATE INDEX check_in_patient_idx ON check_in (patient_id, due_at);
-- The outbox rows that ask a check-in name it in their context.
CREATE INDEX notification_check_in_idx ON notification (((context ->> 'check_in_id')::bigint))
    WHERE kind = 'check_in';

ALTER TABLE call_task DROP CONSTRAINT call_task_reason_check;
ALTER TABLE call_task ADD CONSTRAINT call_task_reason_check CHECK (reason IN (
    'not_confirmed', 'reschedule_requested', 'cancel_inside_notice', 'gap_overdue',
    'proposal_unanswered', 'adverse_event_routine', 'adverse_event_hold',
    'check_in_unanswered', 'check_in_no_channel'));

ALTER TABLE inbound_message DROP CONSTRAINT inbound_message_handled_as_check;
ALTER TABLE inbound_message ADD CONSTRAINT inbound_message_handled_as_check CHECK (handled_as IN (
    'confirmed', 'already_confirmed', 'reschedule_requested', 'cancelled', 'cancel_refused',
    'opted_out', 'opted_in', 'help', 'emergency', 'inbox', 'asked_which', 'check_in_answered'));
