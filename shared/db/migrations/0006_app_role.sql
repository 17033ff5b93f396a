-- The services' own database role, so that the history tables are append-only for the
-- application by privilege and not only by trigger: regimen_app reads and writes ordinary tables,
-- may only INSERT and SELECT audit_log, appointment_event, notification_event and
-- patient_consent, only SELECT schema_migration, and may TRUNCATE nothing and
-- change no schema. Migrations run as the owner of the tables; the services connect as a login
-- role that is a member of regimen_app, or switch to it on every connection (shared/db/pool.py).
--
-- Every later migration that creates an append-only table must REVOKE UPDATE, DELETE on it from
-- regimen_app and give it the refuse_change triggers below; tests/test_database_roles.py lists
-- every table's expected privileges, so a forgotten table fails the suite.

-- Roles belong to the whole cluster: another database of it may have created this one already,
-- possibly at this very moment.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'regimen_app') THEN
        BEGIN
            CREATE ROLE regimen_app NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'the role regimen_app does not exist and % may not create it',
                    current_user
                    USING HINT = 'a superuser runs once: CREATE ROLE regimen_app NOLOGIN';
        END;
    END IF;
END
$$;

-- Databases made before PostgreSQL 15 let every role create tables in public.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO regimen_app;

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO regimen_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO regimen_app;
-- Tables and sequences this owner creates later get the ordinary grants by themselves.
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO regimen_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO regimen_app;

-- History: written once, never changed by the application.
REVOKE UPDATE, DELETE ON audit_log, appointment_event, notification_event, patient_consent
    FROM regimen_app;
-- Read only: which migrations ran is the owner's record. (The view appointment_detail keeps the
-- ordinary grants: SELECT ... FOR UPDATE on a view needs UPDATE on it, and it only shows
-- appointment, which the application may change anyway.)
REVOKE INSERT, UPDATE, DELETE ON schema_migration FROM regimen_app;

-- The row triggers of 0003/0004 stop UPDATE and DELETE even for the owner; TRUNCATE fires no
-- row trigger, so each history table refuses it here (regimen_app lacks the privilege anyway).
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER appointment_event_no_truncate BEFORE TRUNCATE ON appointment_event
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER notification_event_no_truncate BEFORE TRUNCATE ON notification_event
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER patient_consent_no_truncate BEFORE TRUNCATE ON patient_consent
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
