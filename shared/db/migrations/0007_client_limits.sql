-- Abuse limits on the public side: holds per client address, and the countries a clinic texts.

-- The client that took a public hold, as an HMAC of its address under the secret key (never
-- the address itself), so that one address can have only a few holds running at once. Cleared
-- when the hold is booked or released, and by the hold-expiry sweep once it has run out.
ALTER TABLE booking_hold ADD COLUMN client_hash bytea;
CREATE INDEX booking_hold_client_idx ON booking_hold (client_hash, expires_at)
    WHERE client_hash IS NOT NULL AND released_at IS NULL;

-- The countries (ISO 3166 codes, as phonenumbers names them) whose mobiles the clinic sends
-- SMS to; a mobile from anywhere else is refused wherever one is typed, so that nobody can run
-- up the clinic's SMS bill to expensive destinations. NULL: only the clinic's own region.
ALTER TABLE clinic ADD COLUMN sms_countries text[]
    CHECK (sms_countries IS NULL OR (
        cardinality(sms_countries) BETWEEN 1 AND 300
        AND array_to_string(sms_countries, ',') ~ '^[A-Z]{2}(,[A-Z]{2})*$'
    ));
