-- Adverse events: a reaction reported after a session (a check-in answer, an SMS, an email, a
-- phone call, or noticed by staff), its triage tier, the clinician's grade and seriousness, its
-- status, and whether the patient's next session may go ahead (next-session clearance).
-- A medical record: erasure of the patient keeps it (kept at least 6 years).
CREATE TABLE adverse_event (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clinic_id           bigint NOT NULL REFERENCES clinic (id),
    patient_id          bigint NOT NULL REFERENCES patient (id),
    -- the session it followed, when known
    appointment_id      bigint REFERENCES appointment (id),
    -- the check-in that reported it (check_in is another part's table; the FK comes at merge)
    check_in_id         bigint,
    inbound_message_id  bigint REFERENCES inbound_message (id),
    -- the lot/batch the session used, copied from the session record when it is known
    lot_number          text CHECK (lot_number IS NULL OR length(lot_number) BETWEEN 1 AND 100),
    symptoms            text   NOT NULL CHECK (length(symptoms) BETWEEN 1 AND 4000),
    source              text   NOT NULL CHECK (source IN (
                            'check_in', 'sms', 'email', 'phone', 'staff')),
    tier                text   NOT NULL CHECK (tier IN ('routine', 'urgent', 'emergency')),
    -- 1 mild, 2 moderate, 3 severe, 4 life-threatening, 5 death; set by a clinician
    grade               smallint CHECK (grade BETWEEN 1 AND 5),
    seriousness         text   NOT NULL CHECK (seriousness IN (
                            'not_serious', 'possibly_serious', 'serious')),
    status              text   NOT NULL CHECK (status IN ('open', 'acknowledged', 'resolved')),
    acknowledged_at     timestamptz,
    acknowledged_by     text,
    resolved_at         timestamptz,
    resolved_by         text,
    resolution_notes    text,
    -- a clinician said the next session may go ahead (the hold of a grade >= 3 or emergency)
    cleared_at          timestamptz,
    cleared_by          text,
    clearance_reason    text,
    -- when it first held the patient's next session (graded >= 3 or opened as emergency)
    hold_started_at     timestamptz,
    created_at          timestamptz NOT NULL,
    created_by          text   NOT NULL,
    updated_at          timestamptz NOT NULL,
    version             integer NOT NULL DEFAULT 1,
    CHECK ((status = 'resolved') = (resolved_at IS NOT NULL)),
    CHECK ((cleared_at IS NULL) = (cleared_by IS NULL)),
    CHECK ((cleared_at IS NULL) = (clearance_reason IS NULL))
);
CREATE INDEX adverse_event_created_idx ON adverse_event (created_at DESC, id DESC);
CREATE INDEX adverse_event_patient_idx ON adverse_event (patient_id, created_at);
CREATE INDEX adverse_event_lot_idx ON adverse_event (lot_number) WHERE lot_number IS NOT NULL;

-- Every change of an adverse event: who, when, which field from what to what, and why.
-- Append-only (the refuse_change triggers and regimen_app's missing UPDATE/DELETE privileges).
CREATE TABLE adverse_event_history (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    adverse_event_id  bigint NOT NULL REFERENCES adverse_event (id),
    at                timestamptz NOT NULL,
    actor             text   NOT NULL,
    action            text   NOT NULL,
    -- [{"field": ..., "from": ..., "to": ...}]
    changes           jsonb  NOT NULL DEFAULT '[]',
    reason            text   NOT NULL DEFAULT ''
);
CREATE INDEX adverse_event_history_event_idx ON adverse_event_history (adverse_event_id, id);

CREATE TRIGGER adverse_event_history_append_only BEFORE UPDATE OR DELETE ON adverse_event_history
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER adverse_event_history_no_truncate BEFORE TRUNCATE ON adverse_event_history
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
REVOKE UPDATE, DELETE ON adverse_event_history FROM regimen_app;

-- The call list: calls about an adverse event, and when a call is due (the routine tier is
-- called the next business day; other reasons are due when filed).
ALTER TABLE call_task ADD COLUMN due_at timestamptz;
ALTER TABLE call_task ADD COLUMN adverse_event_id bigint REFERENCES adverse_event (id);
ALTER TABLE call_task DROP CONSTRAINT call_task_reason_check;
ALTER TABLE call_task ADD CONSTRAINT call_task_reason_check CHECK (reason IN (
    'not_confirmed', 'reschedule_requested', 'cancel_inside_notice', 'gap_overdue',
    'proposal_unanswered', 'adverse_event_routine', 'adverse_event_hold'));
-- One open call per adverse event and reason (the per-appointment index leaves out calls with
-- no appointment, and a session may have two events).
CREATE UNIQUE INDEX call_task_open_event_once ON call_task (adverse_event_id, reason)
    WHERE done_at IS NULL AND adverse_event_id IS NOT NULL;
