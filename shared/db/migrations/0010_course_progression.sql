-- Course progression (issue 12): the scheduler tells the front desk when the next session of a
-- course is overdue (its gap from the last completed session passed the soft maximum and
-- nothing is booked).
ALTER TABLE call_task DROP CONSTRAINT call_task_reason_check;
ALTER TABLE call_task ADD CONSTRAINT call_task_reason_check CHECK (reason IN (
    'not_confirmed', 'reschedule_requested', 'cancel_inside_notice', 'gap_overdue'));

-- The completion sweep looks for active courses only.
CREATE INDEX series_active_idx ON series (id) WHERE status = 'active';

-- A cause that a sweep finds on every run is filed once, open or done (call_tasks.file_once).
CREATE INDEX call_task_appointment_reason_idx ON call_task (appointment_id, reason);
