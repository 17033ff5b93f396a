-- Clinics, practitioners with weekly working hours, treatments and their series templates.
CREATE TABLE clinic (
    id                         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                       text     NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    time_zone                  text     NOT NULL,
    phone                      text     NOT NULL,
    address                    text     NOT NULL DEFAULT '',
    region                     text     NOT NULL DEFAULT 'GB' CHECK (region ~ '^[A-Z]{2}$'),
    brand_colour               text     NOT NULL DEFAULT '#1f5f8b',
    quiet_start                time     NOT NULL DEFAULT '08:00',
    quiet_end                  time     NOT NULL DEFAULT '20:00',
    min_notice_minutes         integer  NOT NULL DEFAULT 120 CHECK (min_notice_minutes >= 0),
    horizon_days               integer  NOT NULL DEFAULT 180 CHECK (horizon_days > 0),
    cancellation_notice_hours  integer  NOT NULL DEFAULT 24 CHECK (cancellation_notice_hours >= 0),
    hold_minutes               integer  NOT NULL DEFAULT 10 CHECK (hold_minutes > 0),
    created_at                 timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE practitioner (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clinic_id   bigint  NOT NULL REFERENCES clinic (id),
    name        text    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email       text,
    phone       text,
    active      boolean NOT NULL DEFAULT true
);
CREATE INDEX practitioner_clinic_idx ON practitioner (clinic_id);

-- Several rows per weekday make breaks; weekday follows ISO 8601 (1 = Monday).
CREATE TABLE working_hours (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    practitioner_id  bigint   NOT NULL REFERENCES practitioner (id) ON DELETE CASCADE,
    weekday          smallint NOT NULL CHECK (weekday BETWEEN 1 AND 7),
    starts           time     NOT NULL,
    ends             time     NOT NULL,
    CHECK (starts < ends),
    EXCLUDE USING gist (
        practitioner_id WITH =, weekday WITH =,
        tsrange('2000-01-01'::date + starts, '2000-01-01'::date + ends) WITH &&
    )
);

CREATE TABLE treatment (
    id                        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clinic_id                 bigint  NOT NULL REFERENCES clinic (id),
    code                      text    NOT NULL CHECK (code ~ '^[a-z0-9-]{1,50}$'),
    name                      text    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    duration_minutes          integer NOT NULL CHECK (duration_minutes BETWEEN 5 AND 480),
    buffer_before_minutes     integer NOT NULL DEFAULT 0 CHECK (buffer_before_minutes >= 0),
    buffer_after_minutes      integer NOT NULL DEFAULT 0 CHECK (buffer_after_minutes >= 0),
    needs_consultation        boolean NOT NULL DEFAULT false,
    -- a course offers between min and max sessions; a single visit has 1 and 1.
    sessions_min              integer NOT NULL DEFAULT 1 CHECK (sessions_min >= 1),
    sessions_max              integer NOT NULL DEFAULT 1,
    maintenance_interval_days integer CHECK (maintenance_interval_days > 0),
    active                    boolean NOT NULL DEFAULT true,
    UNIQUE (clinic_id, code),
    CHECK (sessions_max >= sessions_min)
);

-- The gap before session `position` (2..sessions_max), counted in local calendar days.
CREATE TABLE treatment_gap (
    treatment_id     bigint  NOT NULL REFERENCES treatment (id) ON DELETE CASCADE,
    position         integer NOT NULL CHECK (position >= 2),
    target_days      integer NOT NULL,
    min_days         integer NOT NULL,
    max_days         integer NOT NULL,
    PRIMARY KEY (treatment_id, position),
    CHECK (0 < min_days AND min_days <= target_days AND target_days <= max_days)
);
