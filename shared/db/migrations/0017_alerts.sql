-- Staff alerts (issue 13): who is alerted about an emergency or urgent reply, the on-call rota,
-- the escalation list per clinic, and each alert with every notification it sent.

-- Staff who receive alerts. Their addresses are staff contact details, not patient data.
CREATE TABLE care_team_member (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clinic_id   bigint  NOT NULL REFERENCES clinic (id),
    name        text    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role        text    NOT NULL CHECK (role IN ('clinician', 'front_desk', 'admin')),
    -- E.164
    mobile      text    CHECK (mobile ~ '^\+[1-9][0-9]{6,14}$'),
    email       text    CHECK (length(email) BETWEEN 3 AND 320),
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX care_team_member_clinic_idx ON care_team_member (clinic_id, id);

-- Who is on call when: [starts_at, ends_at). Overlapping shifts are allowed (a handover); the
-- one that started last wins.
CREATE TABLE on_call_shift (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clinic_id   bigint NOT NULL REFERENCES clinic (id),
    member_id   bigint NOT NULL REFERENCES care_team_member (id) ON DELETE CASCADE,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    created_at  timestamptz NOT NULL,
    CHECK (starts_at < ends_at)
);
CREATE INDEX on_call_shift_clinic_idx ON on_call_shift (clinic_id, starts_at, ends_at);

-- The escalation list: ordered steps, each a member or "whoever is on call" at that moment.
CREATE TABLE escalation_step (
    clinic_id   bigint   NOT NULL REFERENCES clinic (id),
    position    smallint NOT NULL CHECK (position >= 0),
    member_id   bigint REFERENCES care_team_member (id) ON DELETE CASCADE,
    on_call     boolean  NOT NULL DEFAULT false,
    PRIMARY KEY (clinic_id, position),
    CHECK ((member_id IS NULL) = on_call)
);

-- Per-clinic timings (clinical-defaults.md: 15 minutes to acknowledge, urgent call-back 1 h).
-- A clinic without a row uses the column defaults.
CREATE TABLE alert_settings (
    clinic_id               bigint  PRIMARY KEY REFERENCES clinic (id),
    escalate_after_minutes  integer NOT NULL DEFAULT 15 CHECK (escalate_after_minutes BETWEEN 1 AND 1440),
    callback_target_minutes integer NOT NULL DEFAULT 60 CHECK (callback_target_minutes BETWEEN 1 AND 1440)
);

CREATE TABLE staff_alert (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clinic_id           bigint NOT NULL REFERENCES clinic (id),
    tier                text   NOT NULL CHECK (tier IN ('emergency', 'urgent')),
    -- adverse_event is another part's table; its foreign key is added when the parts meet
    adverse_event_id    bigint,
    inbox_item_id       bigint REFERENCES inbox_item (id),
    patient_id          bigint REFERENCES patient (id),
    summary             text   NOT NULL DEFAULT '',
    raised_at           timestamptz NOT NULL,
    -- urgent: when the patient should have been called back (the clinic's call-back target)
    callback_due_at     timestamptz,
    -- the escalation list position reached (-1: the first recipient came from the rota, before
    -- the list)
    step                integer NOT NULL DEFAULT -1,
    recipient_member_id bigint REFERENCES care_team_member (id),
    notified_at         timestamptz,
    -- when the sweep moves it on if nobody has acknowledged; null once it is not open
    escalate_at         timestamptz,
    status              text   NOT NULL DEFAULT 'open'
                        CHECK (status IN ('open', 'acknowledged', 'exhausted')),
    exhausted_at        timestamptz,
    acknowledged_at     timestamptz,
    acknowledged_by     text,
    acknowledge_note    text,
    CHECK ((acknowledged_at IS NULL) = (acknowledged_by IS NULL)),
    CHECK ((status = 'acknowledged') = (acknowledged_at IS NOT NULL)),
    CHECK (status = 'open' OR escalate_at IS NULL)
);
CREATE INDEX staff_alert_due_idx ON staff_alert (escalate_at) WHERE status = 'open';
CREATE INDEX staff_alert_clinic_idx ON staff_alert (clinic_id, status, raised_at);
CREATE INDEX staff_alert_adverse_event_idx ON staff_alert (adverse_event_id)
    WHERE adverse_event_id IS NOT NULL;

-- Every message an alert sent: who, on which channel, when, and its outbox row.
CREATE TABLE staff_alert_notification (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id         bigint  NOT NULL REFERENCES staff_alert (id),
    step             integer NOT NULL,
    member_id        bigint REFERENCES care_team_member (id),
    purpose          text    NOT NULL CHECK (purpose IN ('alert', 'exhausted')),
    channel          text    NOT NULL CHECK (channel IN ('sms', 'email')),
    notification_id  bigint  NOT NULL REFERENCES notification (id),
    at               timestamptz NOT NULL
);
CREATE INDEX staff_alert_notification_alert_idx ON staff_alert_notification (alert_id, id);

-- Who was alerted when is history: written once, never changed (as notification_event).
REVOKE UPDATE, DELETE ON staff_alert_notification FROM regimen_app;
CREATE TRIGGER staff_alert_notification_no_change BEFORE UPDATE OR DELETE
    ON staff_alert_notification FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER staff_alert_notification_no_truncate BEFORE TRUNCATE ON staff_alert_notification
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
