-- The notifier's lanes and its per-send outcomes (issue 11).

-- Each lane (SMS, email, and a priority lane of each for urgent rows) claims its own due rows
-- straight off this index, in due order, without reading past the other lanes' rows.
CREATE INDEX notification_lane_due_idx ON notification (channel, urgent, due_at)
    WHERE status = 'scheduled';
DROP INDEX notification_due_idx;

-- The database's own clock at the two moments that bound a provider call: when the send was
-- decided (the transaction that checked the appointments and began the attempt) and when its
-- outcome was recorded. The app clock's started_at/finished_at stay the record; these measure
-- (a cancel committed after decided_at found the message on its way; recorded_at minus the
-- provider's acceptance is the window in which a crash resends an email).
ALTER TABLE notification_attempt
    ADD COLUMN decided_at timestamptz,
    ADD COLUMN recorded_at timestamptz;

-- A lease runs out by the app's clock, which the dev and test clocks move by hours at a time;
-- whether its worker still lives is a matter of real time. The database's clock at the worker's
-- last sign of life for the row (its claim, its decision to send, each renewal while the call
-- is in flight): a row is rescued only once its lease has run out and no sign of life has come
-- for a whole lease.
ALTER TABLE notification ADD COLUMN lease_renewed_at timestamptz;
