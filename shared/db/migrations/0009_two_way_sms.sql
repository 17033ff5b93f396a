-- Two-way SMS (issue 12): what was made of each reply, the staff inbox and the staff call list.

-- What the reply handler did with a message, written in the same transaction as what it did
-- (confirmed a session, opted the number out, put it in the inbox...), and the answer it gave:
-- Twilio delivering the same webhook again gets the same answer and nothing is done twice.
ALTER TABLE inbound_message
    ADD COLUMN clinic_id       bigint REFERENCES clinic (id),
    ADD COLUMN handled_as      text CHECK (handled_as IN (
        'confirmed', 'already_confirmed', 'reschedule_requested', 'cancelled',
        'cancel_refused', 'opted_out', 'opted_in', 'help', 'emergency', 'inbox')),
    ADD COLUMN appointment_ids bigint[] NOT NULL DEFAULT '{}',
    -- the message whose question this answered (a confirmation request, later a proposal or a
    -- check-in)
    ADD COLUMN answered_id     bigint REFERENCES notification (id),
    ADD COLUMN answer          text,
    -- the answer was the inbox's "the clinic will get back to you" (sent at most once a day)
    ADD COLUMN acknowledged    boolean NOT NULL DEFAULT false,
    ADD COLUMN handled_at      timestamptz;
CREATE INDEX inbound_message_patient_idx ON inbound_message (patient_id, received_at)
    WHERE patient_id IS NOT NULL;

-- Replies a person must read: free text, replies from unknown numbers, replies that could not
-- be told apart (a number shared by several patients). Urgent items (words that signal danger)
-- come first; alerting and escalating them hang off this table (the safety issue).
CREATE TABLE inbox_item (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- null when nobody's record has the number: every clinic's staff may see it
    clinic_id           bigint REFERENCES clinic (id),
    patient_id          bigint REFERENCES patient (id),
    inbound_message_id  bigint NOT NULL UNIQUE REFERENCES inbound_message (id),
    reason              text   NOT NULL CHECK (reason IN (
                            'free_text', 'unknown_number', 'several_patients', 'nothing_asked')),
    urgent              boolean NOT NULL DEFAULT false,
    danger_words        text[] NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL,
    handled_at          timestamptz,
    handled_by          text,
    note                text,
    CHECK ((handled_at IS NULL) = (handled_by IS NULL))
);
CREATE INDEX inbox_item_open_idx ON inbox_item (urgent DESC, created_at, id)
    WHERE handled_at IS NULL;
CREATE INDEX inbox_item_patient_idx ON inbox_item (patient_id) WHERE patient_id IS NOT NULL;

-- People the front desk should phone, and why. One open task per appointment and reason,
-- whoever (a reply, a sweep on any replica) finds the reason first.
CREATE TABLE call_task (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clinic_id       bigint NOT NULL REFERENCES clinic (id),
    patient_id      bigint NOT NULL REFERENCES patient (id),
    appointment_id  bigint REFERENCES appointment (id),
    reason          text   NOT NULL CHECK (reason IN (
                        'not_confirmed', 'reschedule_requested', 'cancel_inside_notice')),
    detail          text   NOT NULL DEFAULT '',
    -- the inbound message that asked for the call, if one did
    inbound_message_id bigint REFERENCES inbound_message (id),
    created_at      timestamptz NOT NULL,
    done_at         timestamptz,
    done_by         text,
    outcome         text,
    CHECK ((done_at IS NULL) = (done_by IS NULL))
);
CREATE UNIQUE INDEX call_task_open_once ON call_task (appointment_id, reason)
    WHERE done_at IS NULL;
CREATE INDEX call_task_open_idx ON call_task (clinic_id, created_at, id) WHERE done_at IS NULL;

-- The reply handler finds the patients behind a number in every clinic (one sender number may
-- serve several clinics); the per-clinic index leads with clinic_id.
CREATE INDEX patient_mobile_any_clinic_idx ON patient (mobile) WHERE erased_at IS NULL;
