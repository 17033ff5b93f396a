-- The browser session that took a public hold, as an HMAC of the booking pages' session cookie
-- under the secret key (never the cookie itself), so that the same browser submitting the same
-- times again (a double click, Back then submit) gets its own hold back instead of being told
-- the times are taken, and a browser choosing other times has its previous hold of that
-- treatment given back. Cleared like client_hash: when the hold is booked or released, and by
-- the hold-expiry sweep once it has run out.
ALTER TABLE booking_hold ADD COLUMN session_hash bytea;
CREATE INDEX booking_hold_session_idx ON booking_hold (session_hash, treatment_id)
    WHERE session_hash IS NOT NULL AND released_at IS NULL;
