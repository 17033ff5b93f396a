-- The browser session that took a public hold, as an HMAC of the booking pages' session cookie
-- under the secret key (never the cookie itself), so that the same browser submitting the same
-- times again (a double click, Back then submit) gets its own hold back instead of being told
-- the times are taken, and a browser choosing other times has its previous hold of that
-- treatment given back. Cleared like client_hash: when the hold is booked or released, and by
-- the hold-expiry sweep once it has run out.
ALTER TABLE booking_hold ADD COLUMN session_hash bytea;
CREATE INDEX booking_hold_session_idx ON booking_hold (session_hash, treatment_id)
    WHERE session_hash IS NOT NULL AND released_at IS NULL;

-- The browser whose own contact change just replaced the patient's private link (a changed
-- mobile or email revokes every link sent so far). That same browser submitting again a moment
-- later from the page of the replaced link (a double click, Back then submit) is carried on at
-- the current link, as its first submit was, instead of being told the link was replaced. One
-- row per patient (the latest change); the browser as an HMAC of the pages' session cookie
-- under the secret key, never the cookie; nothing personal.
CREATE TABLE link_handover (
    patient_id    bigint      PRIMARY KEY REFERENCES patient (id),
    from_version  integer     NOT NULL,
    session_hash  bytea       NOT NULL,
    created_at    timestamptz NOT NULL
);
