-- The notifier's fresh share (issue 15, the 08:00 storm): each claim of a scheduled lane first
-- takes confirmations and replies due in the last minute, then the oldest due rows. By kind,
-- this index reads only those rows, not the whole backlog quiet hours released at 08:00.
CREATE INDEX notification_lane_kind_due_idx ON notification (channel, urgent, kind, due_at)
    WHERE status = 'scheduled';
