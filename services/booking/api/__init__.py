"""The booking service's JSON API. Each endpoint module registers its endpoints on `API` when
imported; `services/booking/app.py` imports every module of this package, adds the routes and
serves the OpenAPI document generated from them (`docs`).

Endpoints are added in the order the modules register them: the package's modules by name, but a
module another one imports registers first (`admin_appointment_actions` imports
`admin_appointments`, so the reads come before the actions). No two routes match the same request,
so the order shows only in the order of the OpenAPI document's paths.

| module | what |
| --- | --- |
| `framework` | an endpoint declared once: models, roles, errors, per-role views |
| `errors` | domain refusals as problem+json, in one place |
| `fields`, `field_paths` | the field types; validation errors named by the request's own paths |
| `pagination` | the one page shape and keyset cursor of every list |
| `common` | role sets, cross-field checks, concurrency answers, audit writing, constraint errors |
| `idempotency`, `ratelimit` | `Idempotency-Key` replays; the public API's per-address limits |
| `move_views` | how a move's gaps, shifts and alternative times are shown |
| `openapi`, `docs` | the OpenAPI document; /api/openapi.json and /api/docs |
| `public` | no token: the clinic, treatments, availability, course proposals |
| `public_holds`, `public_booking` | no token: holding times; booking a hold |
| `me` | who a token is |
| `admin_clinics`, `admin_treatments` | clinic setup; treatments and their course protocols |
| `admin_check_in_plans`, `admin_check_ins` | check-in plans; check-ins and phoned answers |
| `admin_practitioners` | practitioners and their weekly working hours |
| `admin_time_off` | a practitioner's time off and one-off day overrides |
| `admin_appointments` | appointment lists, a practitioner's day or week, one appointment |
| `admin_appointment_actions` | state changes, clinician review, cancelling, rescheduling |
| `session_record_views`, `admin_session_records` | a session's record: shapes; read, add, correct |
| `admin_recall` | who received a lot, with contact status (JSON and CSV) |
| `admin_safety_timeline` | a patient's safety timeline of typed entries |
| `admin_bookings`, `admin_series` | staff booking; courses (series) |
| `admin_patients` | patient search, records and edits, and what the patient modules share |
| `admin_consents`, `admin_erasure`, `admin_export` | a patient's consents; erasure; export |
| `admin_patient_links`, `admin_form_differences` | new private links; booking-form differences |
| `admin_messages` | a patient's or an appointment's messages, resending, cancelling |
| `admin_conversation` | a patient's conversation: outbound and inbound in one time order |
| `admin_inbox`, `admin_call_list` | the staff inbox and replies; the call list |
| `admin_care_team` | who receives alerts, the on-call rota, the escalation list |
| `admin_alerts` | staff alerts: open ones, one with its messages, acknowledging |
| `admin_review_queue` | flagged sessions by patient and course; clearing a course |
| `admin_clinic_day` | every practitioner's appointments for one local day |
| `admin_screening` | a clinic's screening questions; a patient's screening answers |
| `admin_audit`, `admin_tokens` | the audit log; staff API tokens |
| `admin_adverse_events` | adverse events: list, CSV, history, phone reports, grading, clearance |
"""

from __future__ import annotations

from services.booking.api.errors import api_error
from services.booking.api.framework import Api

API = Api(api_error)
