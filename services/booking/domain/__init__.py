"""The booking domain: the rules and state changes of scheduling, free of HTTP.

Every function takes a database connection and works inside the caller's transaction, which
`shared.db.transactions.in_transaction` opens (and retries on deadlock); refusals are the plain
exceptions of `shared.domain.errors` and `errors` here, which each face (the JSON API in
`services/booking/api`, the pages in `services/booking/web`) maps to its own answer in one
place. Nothing here imports aiohttp or the API (a test enforces it).

| module | what |
| --- | --- |
| `offers` | what can be booked and when: free starts, course proposals, alternatives |
| `sessions` | the sessions of one booking: numbered, gap-checked, checked free, inserted |
| `holds` | times held while the patient types |
| `intake` | the patient a public booking is for, and what the form said |
| `bookings` | a hold turned into a booking; staff booking a known patient |
| `consultation_gate` | may a course be booked: a consultation on file, an override, or refused |
| `screening_checks` | screening answers when booking, and their re-confirmation at check-in |
| `next_session` | the patient booking their course's next session (self-service page) |
| `actions` | confirm, check in, complete, no-show (and undoing a wrong one), review |
| `session_records` | a completed session's record: taken with the completion, added, corrected |
| `reschedule` | move a session under the course's gap rules |
| `courses` | a course's plan notes and status |
| `limits` | per client, per mobile and per address limits |
| `queues` | the staff's work queues: inbox items and replies, call tasks, a course's review |
| `errors` | the booking domain's own refusals |

What every change of an appointment is made of (lock, transition, audit) and cancelling are in
`shared/domain/appointment_changes` and `shared/domain/cancellations`: the notifier's SMS replies
confirm and cancel too.
"""
