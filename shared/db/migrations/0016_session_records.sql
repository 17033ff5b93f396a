-- Session records (issue 13): what was done at a completed session, for the clinician and for a
-- product recall. One current record per appointment (`session_record`, corrected in place and
-- versioned) and every version of it with who wrote it, when and why (`session_record_history`,
-- append-only like the audit log), so a correction never loses what the record said before.
CREATE TABLE session_record (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    appointment_id   bigint  NOT NULL UNIQUE REFERENCES appointment (id),
    product          text    CHECK (length(product) BETWEEN 1 AND 200),
    formulation      text    CHECK (length(formulation) BETWEEN 1 AND 200),
    -- as written on the vial, trimmed; the recall search compares it case-insensitively
    lot_number       text    CHECK (length(lot_number) BETWEEN 1 AND 100),
    lot_expiry       date,
    injection_areas  text[]  NOT NULL DEFAULT '{}',
    depth_mm         numeric(5, 2) CHECK (depth_mm > 0),
    needle_length_mm numeric(5, 2) CHECK (needle_length_mm > 0),
    volume_ml        numeric(7, 2) CHECK (volume_ml > 0),
    anaesthetic      text    CHECK (length(anaesthetic) BETWEEN 1 AND 200),
    notes            text    NOT NULL DEFAULT '',
    performed_by     bigint  NOT NULL REFERENCES practitioner (id),
    -- a lot past its expiry on the session date, recorded because it was in fact used
    expired_lot_acknowledged boolean NOT NULL DEFAULT false,
    recorded_by      text    NOT NULL,
    recorded_at      timestamptz NOT NULL,
    version          integer NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL
);
CREATE INDEX session_record_lot_idx ON session_record (lower(lot_number))
    WHERE lot_number IS NOT NULL;

CREATE TABLE session_record_history (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_record_id bigint  NOT NULL REFERENCES session_record (id),
    appointment_id    bigint  NOT NULL REFERENCES appointment (id),
    version           integer NOT NULL,
    at                timestamptz NOT NULL,
    actor             text    NOT NULL,
    reason            text    NOT NULL DEFAULT '',
    -- the record's fields as this version set them
    record            jsonb   NOT NULL,
    UNIQUE (session_record_id, version)
);
CREATE INDEX session_record_history_appointment_idx
    ON session_record_history (appointment_id, version);

REVOKE UPDATE, DELETE ON session_record_history FROM regimen_app;
CREATE TRIGGER session_record_history_append_only BEFORE UPDATE OR DELETE
    ON session_record_history FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER session_record_history_no_truncate BEFORE TRUNCATE ON session_record_history
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
