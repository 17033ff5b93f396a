-- The staff call list's "not confirmed" rule (issue 12): a session whose patient was asked to
-- confirm (the 72 h reminder) and has not by this many hours before the start goes on the call
-- list. Below 72: the patient must have had time to answer the question.
ALTER TABLE clinic ADD COLUMN unconfirmed_call_hours integer NOT NULL DEFAULT 48
    CHECK (unconfirmed_call_hours BETWEEN 1 AND 71);
