-- Aftercare (issue 13): each treatment's aftercare template, which completing a session sends to
-- the patient (SMS and email per care consent) and which the private aftercare page shows. A
-- treatment without a row (a consultation) gets no aftercare message. One row per treatment, so
-- per clinic; clinical wording is the clinic's, edited through the admin API.
CREATE TABLE aftercare_template (
    treatment_id    bigint  PRIMARY KEY REFERENCES treatment (id) ON DELETE CASCADE,
    clinic_id       bigint  NOT NULL REFERENCES clinic (id),
    -- what to do and avoid, one instruction a line, in the order shown
    instructions    text[]  NOT NULL CHECK (cardinality(instructions) BETWEEN 1 AND 40),
    -- what is normal after the session, and for how long at most (days)
    normal_course   text    NOT NULL CHECK (length(normal_course) BETWEEN 1 AND 2000),
    normal_days     integer NOT NULL CHECK (normal_days BETWEEN 1 AND 60),
    -- when to call the clinic, one sign a line
    call_when       text[]  NOT NULL CHECK (cardinality(call_when) BETWEEN 1 AND 40),
    -- what is an emergency (call the country's emergency number), one sign a line
    emergency_signs text[]  NOT NULL CHECK (cardinality(emergency_signs) BETWEEN 1 AND 40),
    version         integer NOT NULL DEFAULT 1,
    updated_at      timestamptz NOT NULL,
    updated_by      text    NOT NULL
);
CREATE INDEX aftercare_template_clinic_idx ON aftercare_template (clinic_id);
