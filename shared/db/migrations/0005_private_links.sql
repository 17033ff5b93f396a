-- Patient privacy: revocable self-service links, and what a public booking form said about an
-- existing patient kept for staff to review instead of being written onto the record.

-- Signed links carry this number; bumping it (a new mobile or email, erasure, staff sending a
-- new link) makes every link issued before stop working.
ALTER TABLE patient ADD COLUMN link_version integer NOT NULL DEFAULT 1 CHECK (link_version >= 1);

-- A public booking matched an existing patient by mobile or email. Whoever filled in the form
-- may not be that patient, so nothing they typed touches the record: the values that differ
-- (contact, names, medical answers, consents ticked) wait here for staff. Not append-only: an
-- erasure deletes these rows, and a reviewed row may be cleared.
CREATE TABLE form_difference (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clinic_id        bigint   NOT NULL REFERENCES clinic (id),
    patient_id       bigint   NOT NULL REFERENCES patient (id),
    hold_id          bigint   REFERENCES booking_hold (id),
    appointment_ids  bigint[] NOT NULL DEFAULT '{}',
    -- field name -> the value the form sent, for the fields that differ from the record
    submitted        jsonb    NOT NULL,
    created_at       timestamptz NOT NULL,
    reviewed_at      timestamptz,
    reviewed_by      text,
    review_note      text     NOT NULL DEFAULT ''
);
CREATE INDEX form_difference_patient_idx ON form_difference (patient_id, created_at DESC);
CREATE INDEX form_difference_open_idx ON form_difference (clinic_id, created_at)
    WHERE reviewed_at IS NULL;
