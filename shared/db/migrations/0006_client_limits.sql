-- Abuse limits on the public side: holds per client address.

-- The client that took a public hold, as an HMAC of its address under the secret key (never
-- the address itself), so that one address can have only a few holds running at once. Cleared
-- when the hold is booked or released, and by the hold-expiry sweep once it has run out.
ALTER TABLE booking_hold ADD COLUMN client_hash bytea;
CREATE INDEX booking_hold_client_idx ON booking_hold (client_hash, expires_at)
    WHERE client_hash IS NOT NULL AND released_at IS NULL;
