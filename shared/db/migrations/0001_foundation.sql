-- Foundation: extensions, staff tokens, inbound SMS log.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE staff_token (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role          text        NOT NULL CHECK (role IN ('admin', 'front_desk', 'clinician')),
    -- sha256 of the token; the token itself is shown once and never stored.
    token_hash    bytea       NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL,
    last_used_at  timestamptz,
    revoked_at    timestamptz
);

CREATE TABLE inbound_message (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_sid   text        NOT NULL UNIQUE,
    from_number   text        NOT NULL,
    to_number     text        NOT NULL,
    body          text        NOT NULL,
    opt_out_type  text,
    received_at   timestamptz NOT NULL
);
CREATE INDEX inbound_message_from_idx ON inbound_message (from_number, received_at DESC);
