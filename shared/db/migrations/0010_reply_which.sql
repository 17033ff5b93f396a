-- A reply that could be any of several patients' (one number, several of them asked) is
-- answered with a numbered question: which patient's appointment? (issue 12)
ALTER TABLE inbound_message DROP CONSTRAINT inbound_message_handled_as_check;
ALTER TABLE inbound_message ADD CONSTRAINT inbound_message_handled_as_check CHECK (handled_as IN (
    'confirmed', 'already_confirmed', 'reschedule_requested', 'cancelled', 'cancel_refused',
    'opted_out', 'opted_in', 'help', 'emergency', 'inbox', 'asked_which'));
