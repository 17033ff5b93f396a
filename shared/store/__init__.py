"""The stores: every SQL statement on the application's tables, in named functions, one owning
module per table (shared/store/<module>.py; the outbox is a package, shared/store/notifications/).

Which module owns which table (all of that table's SQL lives there, and nowhere else):

    clinics             clinic
    practitioners       practitioner
    working_hours       working_hours
    time_off            time_off
    schedule_overrides  schedule_override
    treatments          treatment, treatment_gap (a treatment's series template)
    aftercare_templates aftercare_template (a treatment's aftercare)
    patients            patient
    consents            patient_consent
    series              series
    holds               booking_hold
    appointments        appointment (and its view appointment_detail), appointment_event
    form_differences    form_difference
    audit               audit_log
    idempotent_requests idempotent_request
    rate_limits         rate_limit_counter
    staff_tokens        staff_token
    inbound_messages    inbound_message
    inbox               inbox_item (the staff inbox)
    call_tasks          call_task (the staff call list)
    adverse_events      adverse_event, adverse_event_history (append-only)
    session_records     session_record, session_record_history (a session's record, versions)
    care_team           care_team_member, on_call_shift, escalation_step, alert_settings
    staff_alerts        staff_alert, staff_alert_notification
    notifications       notification, notification_attempt, notification_event,
                        provider_callback, sender_pace
    (shared/db/migrate.py owns schema_migration.)
    diaries             no table: the availability read, one statement across the schedule
                        tables and appointments (see its docstring for why)

A read may join another table to show a row with what it refers to (an appointment with its
clinic's zone); a write touches only the owner's tables.

Every store has the same shape:

* one frozen row dataclass per table (`clinics.Clinic`, `appointments.Appointment`, ...),
  built in one place from one column list;
* a typed insert object where a row has more than a handful of fields
  (`appointments.insert(conn, NewAppointment(...), actor=..., now=...)`,
  `patients.insert(conn, NewPatient(...))`, `outbox.insert(conn, NewNotification(...))`);
* the same verbs: `get` (one row by id, or None), `get_many` (id -> row for the ids that exist,
  one query), `list_page` (keyset-paginated list: rows after the cursor's key, `limit` of them;
  the API asks for one more than it shows), `insert`, `update` (optimistic: the version read
  must still be current), `lock` (`get` with FOR UPDATE, for the rest of the caller's
  transaction) and `delete` where a table has deletes. Anything else is named for what it does
  (`appointments.transition`, `holds.end`, `dispatch.claim_due`).

Every function takes the connection (or pool) to run on; a write that must commit with others
runs on the caller's connection inside `shared.db.transactions.in_transaction`.
"""

from __future__ import annotations

import asyncpg

# What a store function runs on: a connection (inside the caller's transaction) or the pool
# (a single statement on its own).
Executor = asyncpg.Connection | asyncpg.Pool


def affected(status: str) -> int:
    """The row count of a command status such as 'DELETE 3' or 'UPDATE 0'."""
    return int(status.split()[-1])
