"""The notification outbox (owner of `notification`, `notification_attempt`, `notification_event`,
`provider_callback` and `sender_pace`), one module per caller:

    rows       the row dataclasses (Notification, EventView, AttemptView), the status names,
               reading one row, and the event every status change leaves
    outbox     writes by whatever causes a message (shared/outbox_plan.py, the booking domain):
               new rows, cancelling the pending ones that a change makes pointless
    dispatch   the notifier's sending: claims by lane, the decision to send, attempts,
               outcomes, leases (services/notifier/dispatch.py, recording.py)
    send_rules send-time rules that look at other rows: the daily limit's counts, merging
               reminders, the sender's pace (services/notifier/preparing.py, send_checks.py)
    sweeps     the notifier's sweeps: rescued leases, reconciliation, expiry, queue depth
               (services/notifier/sweeps.py)
    callbacks  provider status callbacks (services/notifier/status_callbacks.py)
    questions  what a patient's SMS reply can answer: the latest open question per patient
               (services/notifier/replies.py)
    views      what staff see and do through the admin API: message views, histories,
               resending and cancelling one message, a patient's messages for an access request
    erasure    what a patient's erasure removes from their messages

Invariants, whoever writes: rows are written inside the transaction of whatever causes them (a
booking and its confirmation commit together or not at all; `dedupe_key` makes planning the
same cause twice a no-op); every status change leaves a `notification_event` with its reason
(append-only); a row the notifier has claimed (`sending`, leased to a worker) is moved on only
by the worker that still holds it, or by a sweep once no live worker holds it.

Nothing else is exported here: callers name the module and the function
(`notifications.outbox.insert(conn, NewNotification(...), now=now)`).
"""

# Imported here so that a caller names the part it uses: `notifications.outbox.insert(...)`.
from shared.store.notifications import (
    callbacks,
    dispatch,
    erasure,
    outbox,
    questions,
    rows,
    send_rules,
    sweeps,
    views,
)

__all__ = [
    "callbacks",
    "dispatch",
    "erasure",
    "outbox",
    "questions",
    "rows",
    "send_rules",
    "sweeps",
    "views",
]
