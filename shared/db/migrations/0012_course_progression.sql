-- Course progression (issue 12): the scheduler proposes (and holds) the next session of a course
-- after one is completed, releases proposals nobody answered, and tells the front desk when the
-- next session is overdue (its gap from the last completed session passed the soft maximum and
-- nothing is booked).
ALTER TABLE call_task DROP CONSTRAINT call_task_reason_check;
ALTER TABLE call_task ADD CONSTRAINT call_task_reason_check CHECK (reason IN (
    'not_confirmed', 'reschedule_requested', 'cancel_inside_notice', 'gap_overdue',
    'proposal_unanswered'));

-- A cause that a sweep finds on every run is filed once, open or done (call_tasks.file_once).
CREATE INDEX call_task_appointment_reason_idx ON call_task (appointment_id, reason);

-- The completion and gap sweeps look at active courses only.
CREATE INDEX series_active_idx ON series (id) WHERE status = 'active';

-- The next session proposed to the patient after a completed one: at most one proposal per
-- completed session (whichever replica claims it first), its held appointment, and what came
-- of it. 'skipped': nothing was held (no free time in the gap window, or no way to ask by SMS).
CREATE TABLE session_proposal (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clinic_id            bigint  NOT NULL REFERENCES clinic (id),
    patient_id           bigint  NOT NULL REFERENCES patient (id),
    series_id            bigint  NOT NULL REFERENCES series (id),
    after_appointment_id bigint  NOT NULL UNIQUE REFERENCES appointment (id),
    position             integer NOT NULL CHECK (position >= 2),
    appointment_id       bigint  REFERENCES appointment (id),
    hold_id              bigint  REFERENCES booking_hold (id),
    status               text    NOT NULL CHECK (status IN (
                             'asked', 'accepted', 'declined', 'released', 'skipped')),
    note                 text    NOT NULL DEFAULT '',
    -- an unanswered proposal is released at this moment, before its hold expires
    answer_by            timestamptz,
    created_at           timestamptz NOT NULL,
    settled_at           timestamptz,
    inbound_message_id   bigint REFERENCES inbound_message (id),
    CHECK ((status = 'skipped') = (appointment_id IS NULL)),
    CHECK ((status = 'asked') = (settled_at IS NULL))
);
CREATE INDEX session_proposal_open_idx ON session_proposal (answer_by) WHERE status = 'asked';
CREATE UNIQUE INDEX session_proposal_appointment_idx ON session_proposal (appointment_id)
    WHERE appointment_id IS NOT NULL;
