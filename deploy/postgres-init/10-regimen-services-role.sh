#!/bin/sh
# Runs once, when the postgres container initialises an empty data volume
# (/docker-entrypoint-initdb.d). It makes the services' login role; the tables' owner is
# POSTGRES_USER, which `regimen migrate` logs in as (REGIMEN_MIGRATION_DATABASE_URL).
#
#   regimen_app       NOLOGIN: what the services may do (migration 0006 grants it: ordinary
#                     reads and writes, only INSERT and SELECT on the audit and event tables,
#                     no TRUNCATE, no schema changes)
#   regimen_services  LOGIN, a member of regimen_app: the user in the services' DATABASE_URL
#
# On a volume initialised before this script existed, run the same two statements once as the
# owner (psql -U regimen regimen), then switch the services' DATABASE_URL to regimen_services.
set -eu
psql -v ON_ERROR_STOP=1 -v services_password="${SERVICES_DB_PASSWORD:?set SERVICES_DB_PASSWORD}" \
    --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
SELECT 'CREATE ROLE regimen_app NOLOGIN'
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'regimen_app') \gexec
CREATE ROLE regimen_services LOGIN PASSWORD :'services_password' IN ROLE regimen_app;
SQL
