-- The notification outbox: rows written in the same transaction as whatever causes them, claimed
-- by notifier workers with SKIP LOCKED and a lease, with every attempt and status change kept.
CREATE TABLE notification (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clinic_id           bigint  NOT NULL REFERENCES clinic (id),
    patient_id          bigint  REFERENCES patient (id),
    appointment_id      bigint  REFERENCES appointment (id),
    kind                text    NOT NULL,
    channel             text    NOT NULL CHECK (channel IN ('sms', 'email')),
    -- set for staff alerts; patients' addresses are read at send time so changes apply
    recipient           text,
    template            text    NOT NULL,
    template_version    integer NOT NULL DEFAULT 1,
    language            text    NOT NULL DEFAULT 'en',
    context             jsonb   NOT NULL DEFAULT '{}',
    -- the appointment's version when this was planned: a later change makes it stale
    appointment_version integer,
    due_at              timestamptz NOT NULL,
    expires_at          timestamptz,
    dedupe_key          text    NOT NULL UNIQUE,
    status              text    NOT NULL DEFAULT 'scheduled' CHECK (status IN (
                            'scheduled', 'sending', 'sent', 'delivered', 'failed',
                            'undelivered', 'cancelled', 'suppressed', 'expired', 'unknown')),
    -- staff alerts, emergency answers and replies to a patient's own message ignore quiet hours
    urgent              boolean NOT NULL DEFAULT false,
    attempts            integer NOT NULL DEFAULT 0,
    lease_until         timestamptz,
    leased_by           text,
    provider_id         text    UNIQUE,
    segments            integer,
    body_hash           bytea,
    status_reason       text,
    error_code          integer,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    sent_at             timestamptz,
    delivered_at        timestamptz,
    CHECK (patient_id IS NOT NULL OR recipient IS NOT NULL)
);
CREATE INDEX notification_due_idx ON notification (due_at) WHERE status = 'scheduled';
CREATE INDEX notification_lease_idx ON notification (lease_until) WHERE status = 'sending';
CREATE INDEX notification_unknown_idx ON notification (updated_at) WHERE status = 'unknown';
CREATE INDEX notification_patient_idx ON notification (patient_id, due_at);
CREATE INDEX notification_appointment_idx ON notification (appointment_id);

CREATE TABLE notification_attempt (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id  bigint NOT NULL REFERENCES notification (id),
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    outcome          text CHECK (outcome IN ('sent', 'temporary', 'permanent', 'ambiguous')),
    error_code       integer,
    detail           text NOT NULL DEFAULT '',
    provider_id      text,
    worker           text NOT NULL
);
CREATE INDEX notification_attempt_notification_idx ON notification_attempt (notification_id);

CREATE TABLE notification_event (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id  bigint NOT NULL REFERENCES notification (id),
    at               timestamptz NOT NULL,
    from_status      text,
    to_status        text NOT NULL,
    reason           text NOT NULL DEFAULT ''
);
CREATE INDEX notification_event_notification_idx ON notification_event (notification_id, id);
CREATE TRIGGER notification_event_append_only BEFORE UPDATE OR DELETE ON notification_event
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- Status callbacks already applied (Twilio may deliver one more than once).
CREATE TABLE provider_callback (
    idempotency_token text PRIMARY KEY,
    received_at       timestamptz NOT NULL
);

-- One row per sender: the earliest instant its next segment may leave (rate limit shared by
-- every notifier replica).
CREATE TABLE sender_pace (
    sender        text PRIMARY KEY,
    next_free_at  timestamptz NOT NULL
);

-- Wake dispatch workers the moment a row is written or rescheduled; they poll as a fallback.
CREATE FUNCTION notify_notification_due() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'scheduled' THEN
        -- one payload for all: NOTIFY folds duplicates within a transaction (bulk inserts)
        PERFORM pg_notify('regimen_notification_due', '');
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER notification_due_notify AFTER INSERT OR UPDATE OF status, due_at ON notification
    FOR EACH ROW EXECUTE FUNCTION notify_notification_due();

-- Patients' opt-out state moves with inbound STOP/START; kept on patient (0003) as
-- sms_opted_out_at. Inbound messages learn who sent them.
ALTER TABLE inbound_message ADD COLUMN patient_id bigint REFERENCES patient (id);
