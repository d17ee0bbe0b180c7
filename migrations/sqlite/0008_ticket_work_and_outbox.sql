-- Tickets that can be worked, e-mails that leave, repeat callers (issue 20).

-- Tickets: who works them, how they ended, which flow node opened them (a repeat caller's
-- new call on the same path is linked to the open ticket instead of opening another),
-- and when the SLA sweep e-mailed the manager about them (once).
ALTER TABLE tickets ADD COLUMN node TEXT;
ALTER TABLE tickets ADD COLUMN assignee TEXT;
ALTER TABLE tickets ADD COLUMN resolution TEXT;
ALTER TABLE tickets ADD COLUMN resolved_at INTEGER;
ALTER TABLE tickets ADD COLUMN updated_at INTEGER;
ALTER TABLE tickets ADD COLUMN overdue_notified_at INTEGER;
-- A repeat caller's open ticket on the same path: only open tickets are indexed.
CREATE INDEX tickets_open_by_caller ON tickets (caller_number, node)
    WHERE status IN ('open', 'escalated');
-- Search by caller number, full or by its last four digits.
CREATE INDEX tickets_by_caller_last4 ON tickets (substr(caller_number, -4), id DESC);
CREATE INDEX calls_by_caller_last4 ON calls (substr(from_number, -4), started_at DESC);
-- Tickets past due that the sweep has not e-mailed about yet.
CREATE INDEX tickets_to_sweep ON tickets (due_at)
    WHERE overdue_notified_at IS NULL AND status IN ('open', 'escalated') AND due_at IS NOT NULL;

-- The audit trail of a ticket: who changed what, when, and the notes.
CREATE TABLE ticket_events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id INTEGER NOT NULL REFERENCES tickets (id),
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,      -- 'note', 'status', 'assignee'
    detail    TEXT NOT NULL       -- the note, or 'open -> resolved: <resolution>'
);
CREATE INDEX ticket_events_by_ticket ON ticket_events (ticket_id, id);

-- The outbox: each notification is sent by the worker until SMTP accepts it.
-- `next_attempt_at`: when it may be tried (NULL: now); a notification that waits for the
-- call's voicemail is held until the recording or the end of the call releases it.
-- `claimed_until`: a worker's lease while it sends, so that two instances do not both send.
ALTER TABLE notifications ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE notifications ADD COLUMN last_error TEXT;
ALTER TABLE notifications ADD COLUMN next_attempt_at INTEGER;
ALTER TABLE notifications ADD COLUMN claimed_until INTEGER;
ALTER TABLE notifications ADD COLUMN sent_at INTEGER;
ALTER TABLE notifications ADD COLUMN attach_recording INTEGER NOT NULL DEFAULT 0;
CREATE INDEX outbox_due ON notifications (next_attempt_at) WHERE status = 'queued';
-- Notifications queued before this migration are due now.
UPDATE notifications SET next_attempt_at = created_at WHERE next_attempt_at IS NULL;
