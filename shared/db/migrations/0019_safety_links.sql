-- The safety records name each other: an adverse event the check-in whose answer opened it,
-- a staff alert the adverse event it is about. Nothing deletes these rows (they are medical
-- records kept for the legal period; erasure blanks contact data only), so no ON DELETE rule.
ALTER TABLE adverse_event
    ADD CONSTRAINT adverse_event_check_in_fk FOREIGN KEY (check_in_id) REFERENCES check_in (id);
ALTER TABLE staff_alert
    ADD CONSTRAINT staff_alert_adverse_event_fk
    FOREIGN KEY (adverse_event_id) REFERENCES adverse_event (id);
CREATE INDEX staff_alert_patient_idx ON staff_alert (patient_id) WHERE patient_id IS NOT NULL;
