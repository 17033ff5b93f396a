-- Scheduling core: schedules' exceptions, patients and consents, series, appointments with the
-- no-double-booking constraint, holds, idempotent requests, the audit log, rate-limit counters.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

ALTER TABLE clinic ADD COLUMN version integer NOT NULL DEFAULT 1;
ALTER TABLE clinic ADD COLUMN no_show_grace_minutes integer NOT NULL DEFAULT 30
    CHECK (no_show_grace_minutes >= 0);
ALTER TABLE clinic ADD COLUMN slot_step_minutes integer NOT NULL DEFAULT 15
    CHECK (slot_step_minutes BETWEEN 5 AND 120);
ALTER TABLE practitioner ADD COLUMN version integer NOT NULL DEFAULT 1;
ALTER TABLE treatment ADD COLUMN version integer NOT NULL DEFAULT 1;
ALTER TABLE treatment ADD COLUMN description text NOT NULL DEFAULT '';
ALTER TABLE treatment ADD COLUMN public boolean NOT NULL DEFAULT true;

CREATE TABLE time_off (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    practitioner_id  bigint    NOT NULL REFERENCES practitioner (id) ON DELETE CASCADE,
    during           tstzrange NOT NULL CHECK (NOT isempty(during) AND lower_inc(during)
                                               AND NOT upper_inc(during)),
    reason           text      NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL
);
CREATE INDEX time_off_during_idx ON time_off USING gist (practitioner_id, during);

-- A day whose hours differ from the weekly pattern: ranges replace it; no ranges means closed.
CREATE TABLE schedule_override (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    practitioner_id  bigint NOT NULL REFERENCES practitioner (id) ON DELETE CASCADE,
    day              date   NOT NULL,
    ranges           jsonb  NOT NULL DEFAULT '[]',  -- [["09:00","12:00"], ...]
    reason           text   NOT NULL DEFAULT '',
    UNIQUE (practitioner_id, day)
);

CREATE TABLE patient (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clinic_id      bigint NOT NULL REFERENCES clinic (id),
    first_name     text   NOT NULL CHECK (length(first_name) BETWEEN 1 AND 100),
    last_name      text   NOT NULL CHECK (length(last_name) BETWEEN 1 AND 100),
    mobile         text   CHECK (mobile ~ '^\+[1-9][0-9]{6,14}$'),
    email          text,
    date_of_birth  date,
    allergies      text   NOT NULL DEFAULT '',
    medications    text   NOT NULL DEFAULT '',
    screening      jsonb  NOT NULL DEFAULT '{}',
    notes          text   NOT NULL DEFAULT '',
    language       text   NOT NULL DEFAULT 'en',
    time_zone      text,
    sms_opted_out_at timestamptz,
    erased_at      timestamptz,
    version        integer NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX patient_mobile_idx ON patient (clinic_id, mobile);
CREATE INDEX patient_email_idx ON patient (clinic_id, lower(email));
CREATE INDEX patient_name_trgm_idx ON patient
    USING gin ((lower(first_name || ' ' || last_name)) gin_trgm_ops);

-- Append-only: the current consent of a kind is the newest row.
CREATE TABLE patient_consent (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_id       bigint  NOT NULL REFERENCES patient (id),
    kind             text    NOT NULL CHECK (kind IN ('care_sms', 'care_email',
                                                      'marketing_sms', 'marketing_email')),
    granted          boolean NOT NULL,
    source           text    NOT NULL,
    wording_version  text    NOT NULL,
    recorded_at      timestamptz NOT NULL
);
CREATE INDEX patient_consent_current_idx ON patient_consent (patient_id, kind, recorded_at DESC);

CREATE TABLE series (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clinic_id         bigint  NOT NULL REFERENCES clinic (id),
    patient_id        bigint  NOT NULL REFERENCES patient (id),
    treatment_id      bigint  NOT NULL REFERENCES treatment (id),
    planned_sessions  integer NOT NULL CHECK (planned_sessions >= 1),
    status            text    NOT NULL DEFAULT 'active'
                      CHECK (status IN ('active', 'paused', 'completed', 'cancelled')),
    plan_notes        text    NOT NULL DEFAULT '',
    version           integer NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX series_patient_idx ON series (patient_id);

-- A hold reserves one slot or a whole course while the patient types; its token is hashed.
CREATE TABLE booking_hold (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clinic_id     bigint  NOT NULL REFERENCES clinic (id),
    treatment_id  bigint  NOT NULL REFERENCES treatment (id),
    token_hash    bytea   NOT NULL UNIQUE,
    expires_at    timestamptz NOT NULL,
    created_at    timestamptz NOT NULL,
    released_at   timestamptz
);

CREATE TABLE appointment (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clinic_id        bigint    NOT NULL REFERENCES clinic (id),
    practitioner_id  bigint    NOT NULL REFERENCES practitioner (id),
    treatment_id     bigint    NOT NULL REFERENCES treatment (id),
    patient_id       bigint    REFERENCES patient (id),
    series_id        bigint    REFERENCES series (id),
    position         integer   CHECK (position >= 1),
    hold_id          bigint    REFERENCES booking_hold (id),
    status           text      NOT NULL CHECK (status IN ('held', 'booked', 'confirmed',
                                 'checked_in', 'completed', 'cancelled', 'no_show')),
    during           tstzrange NOT NULL CHECK (NOT isempty(during)),
    -- `during` widened by the treatment's buffers: the time nobody else may use.
    blocked          tstzrange NOT NULL CHECK (blocked @> during),
    needs_review     boolean   NOT NULL DEFAULT false,
    review_reasons   text[]    NOT NULL DEFAULT '{}',
    source           text      NOT NULL DEFAULT 'staff',
    cancelled_reason text,
    cancelled_by     text,
    status_changed_at timestamptz NOT NULL,
    version          integer   NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL,
    -- Only a hold (and a hold that lapsed) may lack a patient.
    CONSTRAINT appointment_patient_check CHECK (
        patient_id IS NOT NULL OR (hold_id IS NOT NULL AND status IN ('held', 'cancelled'))),
    CONSTRAINT appointment_no_double_booking EXCLUDE USING gist (
        practitioner_id WITH =, blocked WITH &&
    ) WHERE (status IN ('held', 'booked', 'confirmed', 'checked_in'))
);
CREATE INDEX appointment_practitioner_during_idx ON appointment USING gist (practitioner_id, during);
CREATE INDEX appointment_patient_idx ON appointment (patient_id, lower(during));
CREATE INDEX appointment_series_idx ON appointment (series_id, position);
CREATE INDEX appointment_hold_idx ON appointment (hold_id) WHERE hold_id IS NOT NULL;
CREATE INDEX appointment_status_start_idx ON appointment (status, lower(during));

-- What the code reads: the ranges split into their ends.
CREATE VIEW appointment_detail AS
SELECT a.id, a.clinic_id, a.practitioner_id, a.treatment_id, a.patient_id, a.series_id,
       a.position, a.hold_id, a.status, lower(a.during) AS starts_at, upper(a.during) AS ends_at,
       lower(a.blocked) AS blocked_from, upper(a.blocked) AS blocked_until, a.needs_review,
       a.review_reasons, a.source, a.cancelled_reason, a.cancelled_by, a.status_changed_at,
       a.version, a.created_at
FROM appointment a;

-- Every state change with who made it and why (history of the state machine).
CREATE TABLE appointment_event (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    appointment_id  bigint NOT NULL REFERENCES appointment (id),
    at              timestamptz NOT NULL,
    from_status     text,
    to_status       text NOT NULL,
    actor           text NOT NULL,
    reason          text NOT NULL DEFAULT '',
    details         jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX appointment_event_appointment_idx ON appointment_event (appointment_id, at);

CREATE TABLE idempotent_request (
    scope          text  NOT NULL,  -- who may reuse the key: a token id or the public API
    key            text  NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
    request_hash   bytea NOT NULL,
    status         integer NOT NULL,
    response       jsonb NOT NULL,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE audit_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL,
    actor_kind   text NOT NULL CHECK (actor_kind IN ('staff', 'patient', 'system')),
    actor_id     bigint,
    actor_name   text NOT NULL,
    action       text NOT NULL,
    entity       text NOT NULL,
    entity_id    bigint,
    patient_id   bigint,
    reason       text NOT NULL DEFAULT '',
    details      jsonb NOT NULL DEFAULT '{}',
    request_id   text
);
CREATE INDEX audit_log_patient_idx ON audit_log (patient_id, at DESC);
CREATE INDEX audit_log_entity_idx ON audit_log (entity, entity_id, at DESC);
CREATE INDEX audit_log_at_idx ON audit_log (at DESC);

CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER appointment_event_append_only BEFORE UPDATE OR DELETE ON appointment_event
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER patient_consent_append_only BEFORE UPDATE OR DELETE ON patient_consent
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- Fixed-window request counters shared by every booking replica; losing them in a crash is fine.
CREATE UNLOGGED TABLE rate_limit_counter (
    bucket        text NOT NULL,
    window_start  timestamptz NOT NULL,
    hits          integer NOT NULL,
    PRIMARY KEY (bucket, window_start)
);
