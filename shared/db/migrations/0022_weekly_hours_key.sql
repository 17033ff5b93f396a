-- Availability keeps each practitioner's weekly hours in memory, keyed by `hours_key`. Every
-- change of their working_hours rows, by whatever writer (the admin API, the demo data, SQL by
-- hand), gives them a new key in the same transaction, so the next availability read in every
-- booking process sees the new week. A random key rather than a counter: one process may talk
-- to several databases (the tests do), and the same practitioner id there must never share a
-- key.
ALTER TABLE practitioner ADD COLUMN hours_key uuid NOT NULL DEFAULT gen_random_uuid();

CREATE FUNCTION practitioner_hours_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        UPDATE practitioner SET hours_key = gen_random_uuid() WHERE id = OLD.practitioner_id;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        UPDATE practitioner SET hours_key = gen_random_uuid() WHERE id = NEW.practitioner_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER working_hours_new_key AFTER INSERT OR UPDATE OR DELETE ON working_hours
    FOR EACH ROW EXECUTE FUNCTION practitioner_hours_changed();
